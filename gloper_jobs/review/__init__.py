"""``gloper review JOB``: a local web page where a person settles each species' reading.

Per species (the ones a decision matters most for first: photos x doubt) it shows a
sample of photos spread over all of them with every candidate mask in both readings,
and one click settles the species: the decision is stored with who and when
(:func:`gloper_jobs.jobs.polarity.settle_species`), the species' photos are re-pointed in
the background (:func:`~gloper_jobs.jobs.polarity.repoint`), and the job's decisions can
be saved as a calibration for later jobs (``--settings-from``). Modules: ``app`` (the
Flask app and its token check), ``pages`` (what a page shows, from the store),
``sampling`` (which photos), ``thumbs`` (the pictures, made once), ``background`` (the
re-pointing thread), ``server`` (waitress, the URL with its token).
"""

from gloper_jobs.review.server import ReviewServer, start_review

__all__ = ["ReviewServer", "start_review"]
