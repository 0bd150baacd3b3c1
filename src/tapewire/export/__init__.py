"""Export to the tools people already run: OpenTelemetry traces (`otlp.py`, attribute names
pinned in `semconv.py`). The JSONL export is `query.export_records`."""
