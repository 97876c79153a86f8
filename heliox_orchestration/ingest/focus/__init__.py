"""Import FOCUS cost exports and GPU utilization samples into ``gpu_usage_hourly``.

FOCUS (the FinOps Open Cost and Usage Specification, 1.0-1.2) is the billing export format of
AWS, Google Cloud, Azure and Oracle. What is imported, and why (docs/importing.md has more):

* Only ``ChargeCategory`` **Usage** rows of a catalogued GPU instance (``gpu_catalog``) with a
  ``ResourceId`` become rows. Usage includes refunds (negative Usage rows): they net against the
  charge of the same resource-hour, as FOCUS intends.
* **Purchase** rows are skipped: a commitment bought upfront reaches the hours it covers through
  their ``EffectiveCost`` (FOCUS amortizes it and sets the purchase's own EffectiveCost to 0), so
  counting it again would double it. **Tax** and **Adjustment** rows are skipped: they are not
  the cost of running a resource for an hour. **Credit** rows are skipped: FOCUS defines credits
  as granted after the fact and burned down by later usage, not as a lower price of an hour, and
  an idle GPU does not stop wasting money because a credit paid for it. Every skipped GPU charge
  is totalled in the report.
* ``ChargeClass=Correction`` rows correct a previously invoiced billing period, so they usually
  arrive in a later month's file than the hours they correct. A re-import replaces whole
  resource-hours, so netting a correction into an hour the file does not otherwise charge would
  overwrite the original charge with the correction alone. Corrections are therefore netted in
  only when the file also holds regular charges for every hour they cover, and skipped (and
  reported) otherwise.
* Cost is ``EffectiveCost`` (amortized, after discounts), or ``BilledCost`` where EffectiveCost
  is missing; the report counts which. Each charge is rounded once to the micro-dollar (the
  column's precision), then charge periods longer than an hour are spread evenly over their
  hours in integer micro-dollars, so the parts sum exactly to the charge.
* Charges of the same resource-hour are summed into one row (the table's primary key).
* Hours that have not started are held in ``gpu_usage_pending`` until they do
  (``ingest/pending``): the hourly table never holds an hour that has not happened.
* Everything the database would refuse, and implausible charges, are refused with the file, line
  and column before anything is written.

Re-importing is idempotent: the rows written replace stored rows of the same (resource_id,
usage_hour), in either table, and nothing else. That scope never deletes what a file does not
mention (another account's export, the demo fleet, earlier months), at the price that a GPU
charge removed from a later version of the same export stays stored. The write is one
transaction: a bad file leaves the database's data untouched. On PostgreSQL a FOCUS file is
written as it is read (``stream``: each chunk COPYed while the next is read), and read again the
general way when it needs the whole file to be summed (a resource-hour charged twice, a
correction, hours already stored); otherwise both files are read and validated before the
database is opened.

* ``PricingCategory`` is kept (``pricing_category``: Standard, Committed, Dynamic, Other, or NULL
  when not known); charges of one resource-hour with different categories: Committed > Dynamic >
  Standard > Other, the highest wins.

The modules, in the order the data flows: ``files`` (CSV, CSV.gz and Parquet through pyarrow's
streaming readers, a batch at a time), ``coded`` (a column as the codes of its distinct texts,
so that each rule runs once per distinct value), ``charges`` (the FOCUS rules above, per charge),
``validation`` (what is refused, and the one-line error), ``spool`` (the hourly parts on disk, by
resource, so that memory follows a batch, not the file), ``hours`` (charges summed into
resource-hours, corrections netted, a spool partition at a time), ``stream`` (the one-pass
write on PostgreSQL), ``utilization`` (samples
averaged per hour and merged), ``report`` (what the import did, as text) and ``importer``
(``import_focus``: the one pass where it can, else read everything, then write once,
streaming the spool).
"""
