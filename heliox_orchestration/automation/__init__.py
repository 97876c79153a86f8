"""Automation: schedules refresh the cost assets in ``TIMEZONE``; sensors turn successful
refreshes into alert runs, watch for stale data, report failed runs and redeliver failed
alerts; ``heliox run`` (manual.py) runs one check now."""
