"""The record of every request (SPEC §5.4): schema and migrations, the batching background writer with
its on-disk spool, retention, and reports. Fed by the verdict bus; never on the request path."""

from schoolproxy.records.database import open_database, upgrade
from schoolproxy.records.spool import Spool
from schoolproxy.records.writer import RecordWriter, to_row

__all__ = ["RecordWriter", "Spool", "open_database", "to_row", "upgrade"]
