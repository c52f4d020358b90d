"""gloper-jobs: animal coat-pattern extraction over photo archives.

Importing this package is cheap: it loads no model, touches no GPU and imports
neither Celery nor torchvision. The heavy parts load when first used.
"""

__version__ = "0.1.0"
