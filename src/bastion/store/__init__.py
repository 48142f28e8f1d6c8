from .sqlite import SQLiteStore, open_store
from .writer import LogWriter

__all__ = ["LogWriter", "SQLiteStore", "open_store"]
