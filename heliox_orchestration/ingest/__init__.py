"""Real signals in: GPU utilization from Prometheus (NVIDIA DCGM exporter).

``prometheus`` is the HTTP client, ``dcgm_mapping`` the label mapping (``HELIOX_DCGM_MAPPING``),
``telemetry`` the hourly query and its aggregation rules, ``utilization`` the storage, the join
with the cost rows and the reports. Nothing here imports Dagster.
"""
