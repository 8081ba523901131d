"""``tiemb ui``: the task list as a web page, and a JSON API, over the task
database (Flask). The page and the API call the same functions as the
command line (:mod:`tiemb.tasks.actions`, :func:`tiemb.tasks.submit`).

JSON API (errors: status 400/404 with ``{"error": "..."}``)::

    GET    /api/tasks[?state=S&tag=k=v]     the tasks
    GET    /api/tasks/<id>                  one task, with "log_tail"
    POST   /api/tasks                       submit: {"name", "models": [...], "tensor_info", "save_root",
                                            "level", "device", "runs", "config", "tags"} -> {"ids": [...]}
    POST   /api/tasks/<id>/stop             -> the task
    POST   /api/tasks/<id>/retry            {"level", "tensor_info", "device", "runs", "config"} (all optional)
    POST   /api/tasks/<id>/tags             {"tags": {k: v}, "remove": [k]}
    POST   /api/tasks/<id>/save             {"repository": DIR} -> {"path": ...}
    DELETE /api/tasks/<id>
"""

from __future__ import annotations

import os

from flask import Flask, abort, flash, g, jsonify, redirect, render_template, request, url_for

from . import actions
from .actions import log_tail
from .store import RUNNING, STATES, Store, TaskError
from .submit import parse_tags, submit


def create_app(db: str) -> Flask:
    """The Flask application over the database file ``db``."""
    app = Flask(__name__)
    app.secret_key = os.urandom(16)  # only for the one-shot messages after an action
    app.config["TIEMB_DB"] = os.path.abspath(db)

    def store() -> Store:
        if "store" not in g:
            g.store = Store(app.config["TIEMB_DB"])
        return g.store

    @app.teardown_appcontext
    def _close(_exc):
        s = g.pop("store", None)
        if s is not None:
            s.close()

    def get_task(task_id: int) -> dict:
        try:
            return store().get(task_id)
        except TaskError:
            abort(404)

    @app.before_request
    def _same_origin():
        # No login: at least refuse changes posted by another site's page
        # (a browser names that page's origin; same-origin forms and API
        # clients without an Origin header pass).
        origin = request.headers.get("Origin")
        if request.method not in ("GET", "HEAD", "OPTIONS") and origin and origin != request.host_url.rstrip("/"):
            abort(403)

    _add_pages(app, store, get_task)
    _add_forms(app, store)
    _add_api(app, store)
    return app


def _add_pages(app: Flask, store, get_task) -> None:
    """The task list, its rows (polled) and one task's page."""
    @app.get("/")
    def index():
        state = request.args.get("state") or None
        tags = parse_tags([request.args["tag"]]) if request.args.get("tag") else None
        return render_template("index.html", tasks=store().list(state=state, tags=tags), states=STATES,
                               running=RUNNING, db=app.config["TIEMB_DB"], state=state)

    @app.get("/rows")
    def rows():
        return render_template("rows.html", tasks=store().list(state=request.args.get("state") or None),
                               running=RUNNING)

    @app.get("/tasks/<int:task_id>")
    def task(task_id):
        t = get_task(task_id)
        return render_template("task.html", t=t, running=RUNNING, log=log_tail(t["log_path"], 40))


def _add_forms(app: Flask, store) -> None:
    """The page's forms: submit, stop, retry, delete, tags, save."""
    def act(fn, back):
        try:
            msg = fn()
            if msg:
                flash(msg, "ok")
        except (ValueError, OSError) as e:
            flash(str(e), "error")
        return redirect(back)

    @app.post("/submit")
    def submit_form():
        f = request.form

        def go():
            ids = submit(store(), f.get("name", ""), [m for m in f.get("models", "").splitlines() if m.strip()],
                         f.get("tensor_info", ""), f.get("save_root", ""), level=int(f.get("level", 0)),
                         device=f.get("device", "cpu"), runs=int(f.get("runs") or 50),
                         tags=parse_tags(f.get("tags", "").split()))
            return f"queued {len(ids)} task(s): {', '.join(map(str, ids))}"
        return act(go, url_for("index"))

    @app.post("/tasks/<int:task_id>/stop")
    def stop_form(task_id):
        return act(lambda: f"task {task_id}: {actions.stop(store(), task_id)}", request.referrer or url_for("index"))

    @app.post("/tasks/<int:task_id>/retry")
    def retry_form(task_id):
        f = request.form

        def go():
            t = actions.retry(store(), task_id, level=int(f["level"]) if f.get("level") else None,
                              tensor_info=f.get("tensor_info") or None,
                              runs=int(f["runs"]) if f.get("runs") else None)
            return f"task {task_id}: {t['state']}"
        return act(go, request.referrer or url_for("index"))

    @app.post("/tasks/<int:task_id>/delete")
    def delete_form(task_id):
        return act(lambda: f"task {task_id} ({actions.delete(store(), task_id)['name']}) deleted", url_for("index"))

    @app.post("/tasks/<int:task_id>/tags")
    def tag_form(task_id):
        f = request.form
        return act(lambda: "tags: " + ", ".join(
            f"{k}={v}" for k, v in actions.tag(store(), task_id, parse_tags(f.get("tags", "").split()),
                                                remove=f.get("remove", "").split()).items()),
            url_for("task", task_id=task_id))

    @app.post("/tasks/<int:task_id>/save")
    def save_form(task_id):
        return act(lambda: "saved to " + actions.save(store(), task_id, request.form.get("repository", "")),
                   url_for("task", task_id=task_id))


def _add_api(app: Flask, store) -> None:
    """The JSON API (see the module docstring)."""
    @app.errorhandler(TaskError)
    @app.errorhandler(ValueError)
    def _bad(e):
        if request.path.startswith("/api/"):
            return jsonify(error=str(e)), 400
        return str(e), 400

    def body() -> dict:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise ValueError("the request body must be a JSON object")
        return data

    def api_task(task_id):
        try:
            t = store().get(task_id)
        except TaskError as e:
            return jsonify(error=str(e)), 404
        return jsonify(dict(t, log_tail=log_tail(t["log_path"])))

    @app.get("/api/tasks")
    def api_list():
        tags = parse_tags(request.args.getlist("tag"))
        return jsonify(store().list(state=request.args.get("state") or None, tags=tags))

    @app.get("/api/tasks/<int:task_id>")
    def api_get(task_id):
        return api_task(task_id)

    @app.post("/api/tasks")
    def api_submit():
        d = body()
        models = d.get("models") or ([d["model"]] if d.get("model") else [])
        ids = submit(store(), d.get("name", ""), models, d.get("tensor_info"), d.get("save_root", ""),
                     level=d.get("level", 0), device=d.get("device", "cpu"), runs=d.get("runs", 50),
                     config=d.get("config"), tags=d.get("tags"))
        return jsonify(ids=ids), 201

    @app.post("/api/tasks/<int:task_id>/stop")
    def api_stop(task_id):
        actions.stop(store(), task_id)
        return api_task(task_id)

    @app.post("/api/tasks/<int:task_id>/retry")
    def api_retry(task_id):
        d = request.get_json(silent=True) or {}
        actions.retry(store(), task_id, level=d.get("level"), tensor_info=d.get("tensor_info"),
                      device=d.get("device"), runs=d.get("runs"), config=d.get("config"))
        return api_task(task_id)

    @app.post("/api/tasks/<int:task_id>/tags")
    def api_tags(task_id):
        d = body()
        if not isinstance(d.get("tags", {}), dict):
            raise ValueError('"tags" must be an object of key: value')
        return jsonify(tags=actions.tag(store(), task_id, {str(k): str(v) for k, v in d.get("tags", {}).items()},
                                        remove=d.get("remove", [])))

    @app.post("/api/tasks/<int:task_id>/save")
    def api_save(task_id):
        return jsonify(path=actions.save(store(), task_id, body().get("repository", "")))

    @app.delete("/api/tasks/<int:task_id>")
    def api_delete(task_id):
        actions.delete(store(), task_id)
        return jsonify(deleted=task_id)


def serve(db: str, host: str = "127.0.0.1", port: int = 8765) -> int:
    """Serves the page until Ctrl-C; prints the address first (port 0 picks a
    free port, and the printed line says which)."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        # The page polls /rows every second: log failures only.
        def log_request(self, code="-", size="-"):
            if str(code)[:1] in ("4", "5"):
                super().log_request(code, size)

    server = make_server(host, port, create_app(db), threaded=True, request_handler=Quiet)
    print(f"tiemb ui: http://{host}:{server.server_port}/ over {os.path.abspath(db)} "
          "(tasks run in `tiemb tasks worker`)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
