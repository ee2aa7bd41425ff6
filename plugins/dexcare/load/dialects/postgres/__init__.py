"""PostgreSQL (14+) through psycopg 3: the dialect, its statements, its COPY staging and its error path."""
