"""Automation: schedules refresh the cost assets in ``TIMEZONE``; sensors turn successful
refreshes into alert runs, watch for stale data, report failed runs and redeliver failed
alerts; ingestion.py imports the landing folder's exports, pulls GPU utilization every hour and
refreshes the costs as soon as usage lands; ``heliox run`` (manual.py) runs one check now."""
