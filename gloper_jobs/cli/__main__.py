"""``python -m gloper_jobs.cli``: the ``gloper`` command."""

from gloper_jobs.cli import main

if __name__ == "__main__":
    main()
