"""Sources -> usage rows: everything that writes what Heliox knows about GPUs.

``focus`` imports FOCUS cost exports (and utilization samples files) into ``gpu_usage_hourly``;
``pending`` holds imported hours that have not started until they do; ``demo_fleet`` generates
the demo fleet. GPU utilization from Prometheus (NVIDIA DCGM exporter): ``prometheus`` is the
HTTP client, ``dcgm_mapping`` the label mapping (``HELIOX_DCGM_MAPPING``), ``telemetry`` the
hourly query and its aggregation rules, ``utilization`` the storage, the join with the cost rows
and the reports. ``landing`` decides which files of the FOCUS landing folder are new or changed.
Nothing here imports Dagster.
"""
