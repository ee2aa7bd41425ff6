"""Microsoft SQL Server (2019+, Azure SQL Database) through pymssql: the dialect, its statements, its bulk-copy
staging."""
