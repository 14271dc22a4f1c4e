"""The database: the schema (models), the engine and its migrations, kept counters."""
