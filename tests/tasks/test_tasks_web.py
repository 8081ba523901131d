"""The task page in a real headless Chromium (Debian's, driven by Playwright):
submit through the page, see the state reach "done" and the speedup appear,
stop, retry with edited settings, tag, delete; and the JSON API beside it."""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from taskhelp import LONG_RUNS, TENSOR_INFO, alive

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-test.txt")
pytest.importorskip("flask", reason="flask is in requirements-test.txt")

WAIT_MS = 120_000


@pytest.fixture
def ui(tasks, tmp_path):
    """`tiemb ui --port 0 --jobs 2` (the page and a worker); yields its address."""
    log = tmp_path / "ui.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tiemb", "ui", "--db", tasks.db, "--port", "0", "--jobs", "2"],
                                stdout=out, stderr=subprocess.STDOUT, env=tasks.env, cwd=tasks.cwd)
    tasks.workers.append(proc)  # SIGTERM at the end stops the page and its worker
    end = time.monotonic() + 30
    while True:
        m = re.search(r"tiemb ui: (http://\S+/)", log.read_text())
        if m:
            return m.group(1)
        assert proc.poll() is None and time.monotonic() < end, log.read_text()
        time.sleep(0.1)


@pytest.fixture
def page():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        pg = browser.new_page(viewport={"width": 1280, "height": 720})
        pg.set_default_timeout(WAIT_MS)
        pg.on("dialog", lambda d: d.accept())   # "Delete task ...?" confirmations
        yield pg
        browser.close()


def _submit(page, url, name, model, save_root, runs="3", tags="", info=TENSOR_INFO):
    page.goto(url)
    page.fill("#name", name)
    page.fill("#models", model)
    page.fill("#tensor_info", info)
    page.fill("#save_root", save_root)
    page.fill("#runs", runs)
    page.fill("#tags", tags)
    page.click("#submit")


def _row(page, task_id, state):
    return page.wait_for_selector(f'#tasks tr[data-id="{task_id}"][data-state="{state}"]')


def test_page_submit_done_stop_retry_tag_delete(ui, page, tasks, serving_model, tmp_path):
    out = str(tmp_path / "out")

    # Bad input through the page: the error is shown, nothing is queued.
    _submit(page, ui, "bad", serving_model, os.path.join(serving_model, "2", "x"))
    assert "is inside the directory of model 'wd'" in page.inner_text(".flash.error")
    _submit(page, ui, "bad", serving_model, out, info="dense:float(1*13)\ncat:int64(1*26")
    assert "line 2 'cat:int64(1*26': expected '(shape)' after the dtype" in page.inner_text(".flash.error")
    assert tasks.list() == []

    # Two versions from one submission; the rows follow the database until "done" with a speedup.
    _submit(page, ui, "web", serving_model, out, tags="team=web")
    assert "queued 2 task(s): 1, 2" in page.inner_text(".flash.ok")
    for tid in (1, 2):
        row = _row(page, tid, "done")
        assert re.fullmatch(r"\d+\.\d\dx", row.query_selector(".speedup").inner_text()), row.inner_text()
        assert row.query_selector(".progress").inner_text() == "100%"
        assert "team=web" in row.query_selector(".tags").inner_text()
    assert page.inner_text('#tasks tr[data-id="2"] .name') == "web-wd-2#2"
    api = page.request.get(ui + "api/tasks/2").json()
    assert api["state"] == "done" and page.inner_text('#tasks tr[data-id="2"] .speedup') == f"{api['speedup']:.2f}x"

    # The report on the task's page.
    page.click('#tasks tr[data-id="1"] .name a')
    assert page.inner_text("#state") == "done"
    assert "speedup" in page.inner_text("#report-summary")
    assert '"max_rel_diff"' in page.text_content("#report")   # the full report, folded
    assert "done" in page.inner_text("#log")

    # A long task: stop it from the list while it accelerates.
    _submit(page, ui, "long", serving_model + "@1", out, runs=LONG_RUNS)
    _row(page, 3, "accelerating")
    pid = tasks.get(3)["pid"]
    page.click('#tasks tr[data-id="3"] button[name="stop"]')
    _row(page, 3, "stopped")
    end = time.monotonic() + 15
    while alive(pid) and time.monotonic() < end:
        time.sleep(0.1)
    assert not alive(pid)
    assert [t["state"] for t in tasks.list()] == ["done", "done", "stopped"]

    # Retry it from its page with fewer timing runs; the page follows it to "done".
    page.goto(ui + "tasks/3")
    page.fill("#r_runs", "3")
    page.click('button[name="retry"]')
    page.wait_for_selector('#state:text-is("done")')
    assert re.fullmatch(r"\d+\.\d\dx", page.inner_text("#speedup"))
    assert tasks.get(3)["runs"] == 3 and tasks.get(3)["attempts"] == 2

    # Tags from the task's page.
    page.fill("#t_tags", "stage=canary owner=me")
    page.click('button[name="tag"]')
    assert tasks.get(3)["tags"] == {"stage": "canary", "owner": "me"}

    # Delete from the list: the row, the task and its optimized model go.
    output = tasks.get(1)["output_path"]
    page.goto(ui)
    page.click('#tasks tr[data-id="1"] button[name="delete"]')
    page.wait_for_selector('#tasks tr[data-id="1"]', state="detached")
    assert "deleted" in page.inner_text(".flash.ok")
    assert [t["id"] for t in tasks.list()] == [2, 3] and not os.path.exists(output)

    page.screenshot(path=str(tmp_path / "tasks.png"), full_page=True)
    if os.environ.get("TIEMB_TASKS_SCREENSHOT"):
        shutil.copy(tmp_path / "tasks.png", os.environ["TIEMB_TASKS_SCREENSHOT"])


def test_json_api(ui, page, tasks, serving_model, tmp_path):
    req = page.request
    r = req.post(ui + "api/tasks", data={"name": "api", "models": [serving_model + "@2"], "tensor_info": TENSOR_INFO,
                                         "save_root": str(tmp_path / "out"), "runs": int(LONG_RUNS),
                                         "tags": {"via": "api"}})
    assert r.status == 201 and r.json() == {"ids": [1]}
    r = req.post(ui + "api/tasks", data={"name": "api", "models": [serving_model + "@1"], "tensor_info": TENSOR_INFO,
                                         "save_root": str(tmp_path / "out")})
    assert r.status == 400 and "a task named 'api' exists already" in r.json()["error"]
    assert [t["name"] for t in req.get(ui + "api/tasks?tag=via=api").json()] == ["api"]
    end = time.monotonic() + 60
    while req.get(ui + "api/tasks/1").json()["state"] not in ("starting", "accelerating"):
        assert time.monotonic() < end
        time.sleep(0.1)
    r = req.delete(ui + "api/tasks/1")
    assert r.status == 400 and "stop it before deleting it" in r.json()["error"]
    assert req.post(ui + "api/tasks/1/stop").json()["state"] == "stopped"
    assert req.post(ui + "api/tasks/1/tags", data={"tags": {"k": "v"}, "remove": ["via"]}).json() == \
        {"tags": {"k": "v"}}
    r = req.post(ui + "api/tasks/1/save", data={"repository": str(tmp_path / "repo")})
    assert r.status == 400 and "only done tasks are saved" in r.json()["error"]
    assert req.get(ui + "api/tasks/9").status == 404
    # A page of another site cannot act on the tasks (there is no login).
    assert req.post(ui + "api/tasks/1/stop", headers={"Origin": "http://evil.example"}).status == 403
    assert req.delete(ui + "api/tasks/1", headers={"Origin": "http://evil.example"}).status == 403
    # Tensor info through the API is text: a file name is not read on the server.
    secret = tmp_path / "secret.txt"
    secret.write_text("x:int64(1*26)\n")
    r = req.post(ui + "api/tasks", data={"name": "f", "models": [serving_model + "@1"], "tensor_info": str(secret),
                                         "save_root": str(tmp_path / "out")})
    assert r.status == 400 and "expected 'element:dtype(shape)'" in r.json()["error"]
    assert req.delete(ui + "api/tasks/1").json() == {"deleted": 1}
    assert req.get(ui + "api/tasks").json() == []
