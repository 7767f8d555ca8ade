"""Bulk identity resolution for migrations: millions of records resolved set-wise in SQL.

    file(s) ─▶ RecordBuilder (normalize, per record) ─▶ COPY into session temp tables
            ─▶ connected components over shared identifiers ─▶ profiles, identities, golden records
               (the statements: cdp_hub.store.profiles.bulk)

The streaming resolver must be paused while it runs (it takes no per-identity locks).
"""

from cdp_hub.resolver.bulk.importer import BulkImporter, ImportSummary, RecordBuilder, read_records

__all__ = ["BulkImporter", "ImportSummary", "RecordBuilder", "read_records"]
