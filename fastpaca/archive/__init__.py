"""The optional Postgres archive (DESIGN section 4): ``postgres.py`` speaks
SQL, ``archiver.py`` decides what to copy and acknowledges it through Raft."""
