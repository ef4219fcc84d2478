"""The analysis layer: what turns finished runs into tables and figures (compare, probe, properties, reports)."""
