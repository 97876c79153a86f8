"""Detections: the rules that turn cost aggregates and usage into findings an alert reports
(idle GPUs, a day over the burn-rate threshold, data that stopped arriving). Plain functions,
apart from Dagster."""
