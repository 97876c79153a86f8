"""Alerts: Slack messages, the alert ledger and the jobs that send them."""
