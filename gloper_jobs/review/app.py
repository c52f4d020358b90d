"""``gloper review``'s web app (Flask, served by waitress): the species queue, a page per
species, one click to settle it, a button to save the decisions as a calibration.

Access: every request carries one of the tokens printed with the URL, in the query
string once (the answer sets a cookie and drops it from the address bar) or in that
cookie; a form POST must carry the token in the form itself (a cookie alone does not
count, so another site cannot post for the user). No token: 401; a wrong one: 403.
Images come only from the picture cache, at paths built from the store's ids and
candidate names, never from a path in the URL.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from flask import (
    Flask,
    Response,
    abort,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from sqlmodel import select
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from gloper_jobs.exceptions import GloperError, ImageLoadError, InvalidParameterError
from gloper_jobs.reporting import when
from gloper_jobs.review.background import Repointer
from gloper_jobs.review.pages import (
    READINGS,
    UnknownSpeciesError,
    mask_label,
    next_species,
    queue,
    species_calls,
    species_page,
)
from gloper_jobs.review.thumbs import ThumbCache
from gloper_jobs.store import Candidate, Item, Job, Store

TOKEN_FIELD = "token"
#: how long the browser may keep a picture (they are made once; a changed mask is a new file name)
PICTURE_MAX_AGE = 3600


@dataclass
class Review:
    """What the app serves: one job of one store, who may decide, the pictures, the re-pointing."""

    store: Store
    job_id: int
    tokens: Mapping[str, str]  # token -> who (recorded with each decision)
    cache: ThumbCache
    repointer: Repointer
    per_page: int
    #: held by each decision and each re-pointing batch (they write the same job row)
    lock: Any = field(default_factory=threading.RLock)
    cookie: str = "gloper_review"

    def who(self, token: str | None) -> str | None:
        """The name of ``token``, None when it is none of the tokens (compared in constant time)."""
        if not token:
            return None
        found = None
        for known, name in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                found = name
        return found


def repoint_text(state: Mapping[str, Any]) -> str:
    """The one line the page shows about the background re-pointing."""
    if state["running"]:
        done = state.get("progress") or {}
        took = time.time() - (state["started"] or time.time())
        return (f"re-pointing the photos to the calls ... {done.get('items', 0)} looked at, "
                f"{done.get('repointed', 0)} re-pointed ({took:.0f} s)")
    if state["error"]:
        return f"re-pointing failed: {state['error']} (the next decision tries again)"
    result = state["result"]
    if state["passes"] and isinstance(result, dict):
        return (f"photos follow the calls: {state.get('repointed', 0)} re-pointed since this page started "
                f"(last pass: {result.get('items', 0)} looked at in {result.get('seconds', 0):.1f} s)")
    return ""


def create_app(review: Review) -> Flask:
    """The Flask app serving ``review``."""
    app = Flask(__name__)
    app.jinja_env.globals.update(when=when, readings=READINGS, mask_label=mask_label)

    def job(session: Any) -> Job:
        row = session.get(Job, review.job_id)
        if row is None:
            abort(404, f"job {review.job_id} is no longer in the store")
        return row

    def refuse(status: int, why: str) -> Response:
        return Response(f"{why}\nOpen the URL `gloper review` printed (it ends with ?token=...).\n",
                        status=status, mimetype="text/plain")

    @app.before_request
    def check_token() -> BaseResponse | None:
        if request.method == "POST":
            g.token = request.form.get(TOKEN_FIELD)
            g.who = review.who(g.token)
            if g.who is None:
                return refuse(403, "this form carries no valid token (a cookie alone is not enough to post)")
            return None
        given = request.args.get(TOKEN_FIELD)
        g.token = given if given is not None else request.cookies.get(review.cookie)
        if not g.token:
            return refuse(401, "this page needs its token")
        g.who = review.who(g.token)
        if g.who is None:
            return refuse(403, "wrong token")
        if given is not None:  # into the cookie, out of the address bar and the history
            rest = {k: v for k, v in request.args.items(multi=True) if k != TOKEN_FIELD}
            resp = redirect(request.path + ("?" + urlencode(rest) if rest else ""), code=303)
            resp.set_cookie(review.cookie, given, httponly=True, samesite="Strict")
            return resp
        return None

    @app.after_request
    def headers(resp: Response) -> Response:
        nonce = g.get("nonce", "")
        resp.headers["Content-Security-Policy"] = (
            "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; "
            f"form-action 'self'; frame-ancestors 'none'; base-uri 'none'; script-src 'nonce-{nonce}'")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        if resp.mimetype != "image/jpeg":
            resp.headers["Cache-Control"] = "no-store"
        return resp

    def page(template: str, **context: Any) -> str:
        g.nonce = secrets.token_urlsafe(12)
        return render_template(template, who=g.who, token=g.token, nonce=g.nonce,
                               repoint_text=repoint_text(review.repointer.state()), **context)

    @app.get("/")
    def index() -> str:
        with review.store.session() as s:
            rows = queue(s, review.job_id)
            row = job(s)
        calibration = request.args.get("calibration", type=int)
        settled = sum(1 for r in rows if r.call.get("how") == "person")
        return page("index.html", job=row, rows=rows, settled=settled, calibration=calibration,
                    settled_note=request.args.get("settled", ""))

    @app.get("/species")
    def species() -> str:
        name = request.args.get("name", "")
        number = request.args.get("page", 1, type=int) or 1
        with review.store.session() as s:
            row = job(s)
            try:
                p = species_page(s, row, name, number, review.per_page)
            except UnknownSpeciesError:
                abort(404, f"job {review.job_id} has no species {name!r}; its species: "
                           f"{', '.join(sorted(species_calls(row)))}")
            following = next_species(s, review.job_id, name)
        cur_mask = p.current[0] or next((m for r in p.rows for (m, _), n in r.readings.items()
                                         if n == r.item.choice), None)
        settled = request.args.get("settled", "")
        return page("species.html", job=row, p=p, cur_mask=cur_mask, cur_pol=p.current[1],
                    settled=settled, next_name=following)

    @app.post("/settle")
    def settle() -> BaseResponse:
        name = request.form.get("species", "")
        polarity, _, mask = request.form.get("pick", "").partition(":")
        with review.lock, review.store.session() as s:
            from gloper_jobs.jobs.polarity import settle_species

            try:
                settle_species(s, review.job_id, name, polarity, mask or None, g.who)
            except InvalidParameterError as exc:
                abort(400, str(exc))
            s.commit()
            following = next_species(s, review.job_id, name)
        review.repointer.request()
        note = f"{name}: settled {polarity} · {mask} by {g.who}; its photos are being re-pointed."
        if following is None:
            return redirect(url_for("index", settled=note), code=303)
        return redirect(url_for("species", name=following, settled=note), code=303)

    @app.post("/calibration")
    def calibration() -> BaseResponse:
        from gloper_jobs.jobs.repointing import save_as_calibration

        with review.lock, review.store.session() as s:
            try:
                saved = save_as_calibration(s, review.job_id, g.who)
            except InvalidParameterError as exc:
                abort(400, str(exc))
            s.commit()
        return redirect(url_for("index", calibration=saved), code=303)

    @app.get("/status")
    def status() -> Response:
        state = review.repointer.state()
        return jsonify({**state, "text": repoint_text(state)})

    def own_item(session: Any, item_id: int) -> Item:
        item = session.get(Item, item_id)
        if item is None or item.job_id != review.job_id:
            abort(404, f"no photo {item_id} in job {review.job_id}")
        return item

    def picture(make: Any) -> Response:
        try:
            path = make()
        except (ImageLoadError, OSError, GloperError) as exc:
            abort(404, f"cannot show this picture: {exc}")
        return send_file(path, mimetype="image/jpeg", max_age=PICTURE_MAX_AGE, conditional=True)

    @app.get("/photo/<int:item_id>")
    def photo(item_id: int) -> Response:
        with review.store.session() as s:
            item = own_item(s, item_id)
        return picture(lambda: review.cache.photo(item))

    @app.get("/reading/<int:item_id>/<name>")
    def reading(item_id: int, name: str) -> Response:
        with review.store.session() as s:
            item = own_item(s, item_id)
            cand = s.exec(select(Candidate).where(Candidate.item_id == item_id, Candidate.name == name)).first()
        if cand is None:
            abort(404, f"photo {item_id} has no candidate {name!r}")
        return picture(lambda: review.cache.reading(item, cand))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return Response(f"{exc.code} {exc.name}: {exc.description}\n", status=exc.code or 500,
                        mimetype="text/plain")

    return app
