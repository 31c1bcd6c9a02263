"""The official Huawei Cloud Python SDK (huaweicloudsdkcoc) against a real ledger.

Starts its own nats-server and the daemon binary, each on a port it binds itself and reports, publishes tickets with
`ticket-ledger emit`, then runs the README's SDK snippet unchanged and goes on with the client it
built: filters, marker paging, a wrong secret key.
"""

import contextlib
import json
import os
import re
import shutil
import queue
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from huaweicloudsdkcoc.v1 import CocClient, ListScriptJobsRequest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions import exceptions

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "target" / "debug" / "ticket-ledger"
AK = "SDKTESTACCESSKEY0001"
SK = "sdk-test-secret-key"


def nats_port(ports_dir, timeout=15):
    """The port a nats-server started with `-p -1 --ports_file_dir` reports having bound."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for f in Path(ports_dir).glob("*.ports"):
            try:
                return int(json.loads(f.read_text())["nats"][0].rsplit(":", 1)[1])
            except (ValueError, KeyError, IndexError):
                pass
        time.sleep(0.02)
    raise AssertionError("nats-server reported no port")


def daemon_port(daemon, timeout=60):
    """The port the daemon (listening on port 0) reports in its JSON log line "listening"; its
    log goes on being drained on a thread."""
    found = queue.Queue()

    def drain():
        for line in daemon.stderr:
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if v.get("fields", {}).get("message") == "listening":
                found.put(int(v["fields"]["addr"].rsplit(":", 1)[1]))

    threading.Thread(target=drain, daemon=True).start()
    return found.get(timeout=timeout)


def wait_for(pred, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def readyz(url):
    try:
        with urllib.request.urlopen(f"{url}/readyz") as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)


def nats_server_binary():
    found = shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/local/bin/nats-server") if os.path.exists(p)),
        None,
    )
    assert found, "nats-server is not installed (scripts/ensure-nats-server.sh installs it)"
    return found


def event(kind, project, order_id, t, **created):
    data = {"project_id": project, "order_id": order_id, **created}
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 1000)) + ".%03dZ" % (t % 1000)
    return {
        "specversion": "1.0",
        "id": f"{project}-{order_id}-{kind}",
        "source": "sdk-test",
        "type": f"coc.job.script.{kind}",
        "time": iso,
        "data": data,
    }


def tickets():
    """The history: 25 tickets in "demo" (creators, statuses, names vary), 3 in "other"."""
    events, expected = [], []
    for i in range(1, 26):
        t0 = 1_690_000_000_000 + i * 60_000
        creator = ["alice", "bob"][i % 2]
        name = f"patch-{i}" if i % 3 == 0 else f"deploy-{i}"
        events.append(event("created", "demo", i, t0, execute_uuid=f"SCT{i:04d}",
                            order_name=name, creator=creator, region_ids="cn-north-4"))
        status, costs = "READY", None
        if i % 4 == 0:
            events.append(event("started", "demo", i, t0 + 10))
            events.append(event("finished", "demo", i, t0 + 5_000))
            status, costs = "FINISHED", 5_000
        elif i % 4 == 1:
            events.append(event("cancelled", "demo", i, t0 + 700))
            status, costs = "CANCELED", 700
        expected.append(dict(order_id=i, order_name=name, creator=creator, status=status,
                             execute_costs=costs, gmt_created=t0))
    for i in range(1, 4):
        events.append(event("created", "other", i, 1_690_000_000_000, execute_uuid=f"OTH{i}",
                            order_name="patch-other", creator="alice", region_ids="r"))
    return events, expected


@contextlib.contextmanager
def running_ledger(tmp, auth):
    """A nats-server and the daemon binary, each on a port it binds and reports, with `auth` as
    the config's [auth] table; yields (daemon URL, NATS port, emit), where emit(events)
    publishes events with `ticket-ledger emit --file -`. Stops both on exit."""
    assert BINARY.exists(), f"{BINARY} is missing: run `cargo build` first (.ci/run does)"
    nats = subprocess.Popen(
        [nats_server_binary(), "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", str(tmp / "js"),
         "--ports_file_dir", str(tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    daemon = None
    try:
        port = nats_port(tmp)
        config = tmp / "ledger.toml"
        config.write_text(f"""
[http]
listen = "127.0.0.1:0"
[store]
path = "{tmp / 'store'}"
[nats]
url = "nats://127.0.0.1:{port}"
embedded = "never"
[auth]
{auth}
""")
        env = dict(os.environ, TICKET_LEDGER_CONFIG=str(config), TICKET_LEDGER_LOG__FORMAT="json",
                   TICKET_LEDGER_LOG__LEVEL="warn,ticket_ledger::app=info")
        daemon = subprocess.Popen([str(BINARY), "serve"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{daemon_port(daemon)}"
        wait_for(lambda: readyz(url)["nats_connected"], "the daemon")

        def emit(events):
            lines = "\n".join(json.dumps(e) for e in events) + "\n"
            subprocess.run([str(BINARY), "emit", "--file", "-"], input=lines.encode(), env=env,
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        yield url, port, emit
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=30)
        nats.kill()
        nats.wait()


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ledger")
    (tmp / "sk").write_text(SK + "\n")
    auth = f"""principals = [{{ name = "sdk", projects = ["demo"], actions = ["coc:job:list"] }}]
tokens = []
access_keys = [{{ principal = "sdk", access_key = "{AK}", secret_key_file = "{tmp / 'sk'}" }}]"""
    with running_ledger(tmp, auth) as (url, _, emit):
        events, expected = tickets()
        emit(events)
        wait_for(lambda: readyz(url)["applied_seq"] == len(events), "ingestion")
        yield url, expected


def readme_snippet():
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- sdk-snippet -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md has no sdk-snippet"
    return m.group(1)


def rows(page):
    return [(t.order_id, t.order_name, t.creator, t.status, t.execute_costs, t.gmt_created)
            for t in page.data.data]


def want(expected, pred=lambda e: True):
    return [(e["order_id"], e["order_name"], e["creator"], e["status"], e["execute_costs"],
             e["gmt_created"]) for e in sorted(expected, key=lambda e: -e["order_id"]) if pred(e)]


def test_the_readme_snippet_lists_tickets_through_the_official_sdk(ledger, monkeypatch, capsys):
    url, expected = ledger
    monkeypatch.setenv("LEDGER_URL", url)
    monkeypatch.setenv("LEDGER_AK", AK)
    monkeypatch.setenv("LEDGER_SK", SK)
    scope = {}
    exec(readme_snippet(), scope)
    page = scope["page"]
    finished = want(expected, lambda e: e["status"] == "FINISHED")
    assert page.data.total == len(finished)
    assert rows(page) == finished[:10]
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split()[0] == str(finished[0][0])

    client = scope["client"]
    # Filters, parsed into the SDK's own models.
    page = client.list_script_jobs(ListScriptJobsRequest(limit=100, creator="bob", status="CANCELED"))
    assert rows(page) == want(expected, lambda e: e["creator"] == "bob" and e["status"] == "CANCELED")
    t0 = 1_690_000_000_000
    page = client.list_script_jobs(ListScriptJobsRequest(start_time=t0 + 5 * 60_000, end_time=t0 + 9 * 60_000))
    assert [r[0] for r in rows(page)] == [9, 8, 7, 6, 5]
    assert page.data.data[0].properties.region_ids == "cn-north-4"

    # Marker paging walks every ticket of the project once, newest first; "other" never shows.
    seen, marker = [], None
    while True:
        req = ListScriptJobsRequest(limit=7, marker=marker) if marker else ListScriptJobsRequest(limit=7)
        page = client.list_script_jobs(req)
        assert page.data.total == 25
        if not page.data.data:
            break
        seen += rows(page)
        marker = page.data.data[-1].order_id
    assert seen == want(expected)


def test_a_wrong_secret_key_gets_401(ledger):
    url, _ = ledger
    client = (CocClient.new_builder()
              .with_credentials(BasicCredentials(AK, "not-the-secret", "demo"))
              .with_endpoints([url])
              .build())
    with pytest.raises(exceptions.ClientRequestException) as e:
        client.list_script_jobs(ListScriptJobsRequest(limit=10))
    assert e.value.status_code == 401
    assert e.value.error_code == "COC.00040107"


def test_a_project_the_key_is_not_granted_gets_403(ledger):
    url, _ = ledger
    client = (CocClient.new_builder()
              .with_credentials(BasicCredentials(AK, SK, "other"))
              .with_endpoints([url])
              .build())
    with pytest.raises(exceptions.ClientRequestException) as e:
        client.list_script_jobs(ListScriptJobsRequest(limit=10))
    assert e.value.status_code == 403
