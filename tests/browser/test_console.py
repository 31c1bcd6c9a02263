"""The console in a real headless Chromium (Debian's `chromium`, driven by Playwright) against the
daemon binary fed with events: sign-in, the spec's example page, a status filter, paging, a
ticket's history, a wrong token, Chinese, a hostile ticket name, and no request to any other
origin. Screenshots of each step go to target/console-screenshots/ (test output, not committed).
"""

import hashlib
import shutil
import sys
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "sdk"))
from test_official_sdk import event, readyz, running_ledger, wait_for  # noqa: E402

TOKEN = "console-token"
HOSTILE = "<img src=x onerror=alert(1)>"
SHOTS = ROOT / "target" / "console-screenshots"
WHO = "xxxxxxxxxxxcontainer1"


def history():
    """The spec's example page (tickets 70–74), 25 more below them, a hostile name, a rejected event."""
    ev = []
    spec = [
        (70, 1689751168547, "111", "SCT2023071915xxxxxxxxxxxxx", [("started", 1689751169000), ("abnormal", 1689751170000)]),
        (71, 1689753553241, "patch_730", "SCT2023071915xxxxxxxxxxxxx", [("started", 1689753554000), ("finished", 1689753579363)]),
        (72, 1690017490247, "xxx", "SCT2023072217181xxxxxxxxxx", [("abnormal", 1690017499000)]),
        (73, 1690168434460, "071201", "SCT2023072411xxxxxxxxxxxxx", [("started", 1690168435000), ("finished", 1690168443277)]),
        (74, 1690200829451, "071201", "SCT20230724201xxxxxxxxxxxx",
         [("started", 1690200830000), ("paused", 1690200840000), ("cancelled", 1690200850293), ("started", 1690200860000)]),
    ]
    for order_id, t0, name, uuid, steps in spec:
        ev.append(event("created", "demo", order_id, t0, execute_uuid=uuid, order_name=name, creator=WHO, region_ids="***"))
        for n, (kind, t) in enumerate(steps):
            e = event(kind, "demo", order_id, t)
            e["id"] += f"-{n}"
            ev.append(e)
    for i in range(1, 26):
        t0 = 1_680_000_000_000 + i * 60_000
        ev.append(event("created", "demo", i, t0, execute_uuid=f"SCTC{i:04d}", order_name=f"batch-{i}", creator="bob", region_ids="r"))
        if i % 2:
            ev.append(event("finished", "demo", i, t0 + 1_500))
    ev.append(event("created", "demo", 60, 1_685_000_000_000, execute_uuid="SCTHOSTILE", order_name=HOSTILE, creator="eve", region_ids="r"))
    # A ticket with a plan (contract v1.1): two batches of hosts, some run.
    t0 = 1_684_000_000_000
    hosts = lambda b, n: [{"instance_id": b * 100 + i, "resource_id": f"ecs-{b}-{i}", "region_id": "cn-north-4"} for i in range(n)]
    ev.append(event("created", "demo", 50, t0, execute_uuid="SCTPLAN", order_name="nginx-rollout", creator="alice", region_ids="cn-north-4",
                    script_name="install-nginx", script_uuid="SC-nginx", script_version_uuid=3, script_version_name="v3",
                    execute_param={"timeout": 300, "execute_user": "root", "script_params": [
                        {"param_name": "version", "param_value": "1.25", "param_order": 1},
                        {"param_name": "token", "param_value": "s3cret", "param_order": 2, "sensitive": True}]},
                    execute_batches=[{"batch_index": 1, "rotation_strategy": "PAUSE", "target_instances": hosts(1, 3)},
                                     {"batch_index": 2, "rotation_strategy": "CONTINUE", "target_instances": hosts(2, 2)}]))
    ev.append(event("started", "demo", 50, t0 + 100))
    ev.append(event("batch_started", "demo", 50, t0 + 200, batch_index=1))
    for n, (kind, inst, dt, msg) in enumerate([("instance_started", 100, 300, None), ("instance_finished", 100, 2_300, "installed nginx 1.25"),
                                               ("instance_started", 101, 400, None), ("instance_abnormal", 101, 5_400, "exit 1: disk full"),
                                               ("instance_started", 102, 500, None)]):
        e = event(kind, "demo", 50, t0 + dt, batch_index=1, instance_id=inst, **({"message": msg} if msg else {}))
        e["id"] += f"-{n}"
        ev.append(e)
    return ev


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    auth = f"""principals = [{{ name = "operator", projects = ["demo"], actions = ["coc:job:list", "coc:job:get", "coc:ledger:admin"] }}]
tokens = [{{ principal = "operator", sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}" }}]
access_keys = []"""
    with running_ledger(tmp, auth) as (url, _, emit):
        events = history()
        emit(events)
        wait_for(lambda: readyz(url)["applied_seq"] == len(events), "ingestion")
        yield url, emit


def chromium():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is not installed (scripts/browser-test.sh installs Debian's)"
    return found


def test_the_console_in_a_real_browser(ledger):
    ledger, ledger_emit = ledger
    SHOTS.mkdir(parents=True, exist_ok=True)
    requests, dialogs, console_errors = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("request", lambda r: requests.append(r.url))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        shot = lambda name: page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

        # `/` leads to the console; a wrong token gets the API's own message.
        page.goto(ledger + "/")
        assert page.url.startswith(ledger + "/console/")
        page.get_by_label("Token (X-Auth-Token)").fill("wrong-token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#error")).to_contain_text("COC.00040101: the X-Auth-Token is not valid")
        shot("01-wrong-token")

        page.get_by_label("Token (X-Auth-Token)").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#total")).to_have_text("Total: 32")
        # The spec's example page: tickets 74 to 70, newest first, times humanised.
        rows = page.locator("#tickets tbody tr")
        first = [rows.nth(i).locator("td").nth(0).inner_text() for i in range(5)]
        assert first == ["74", "73", "72", "71", "70"]
        assert rows.nth(0).locator("td").nth(1).inner_text() == "071201"
        assert rows.nth(0).locator("td").nth(2).inner_text() == "CANCELED"
        assert rows.nth(0).locator("td").nth(6).inner_text() == "20.8 s"
        assert rows.nth(0).locator("td").nth(6).locator("span").get_attribute("title") == "20842 ms"
        assert rows.nth(1).locator("td").nth(6).inner_text() == "8.8 s"
        assert rows.nth(2).locator("td").nth(6).inner_text() == "—"
        shot("02-list")

        # The hostile name is text, and ran nothing.
        hostile = page.locator("#tickets tbody tr[data-order-id='60'] td").nth(1)
        assert hostile.inner_text() == HOSTILE
        assert page.locator("#tickets img").count() == 0

        # A status filter: the total changes; the chips show each status's total.
        page.locator(".chip[data-status='FINISHED']").click()
        expect(page.locator("#total")).to_have_text("Total: 15")
        assert "status=FINISHED" in page.url
        expect(page.locator(".chip[data-status='FINISHED']")).to_have_text("FINISHED (15)")
        shot("03-finished")
        page.locator(".chip[data-status='']").click()
        expect(page.locator("#total")).to_have_text("Total: 32")

        # Paging forward and back with the marker stack.
        page1 = page.locator("#tickets tbody tr td:first-child").all_inner_texts()
        page.locator("#next").click()
        expect(page.locator("#page-no")).to_have_text("Page 2")
        page2 = page.locator("#tickets tbody tr td:first-child").all_inner_texts()
        assert int(page2[0]) < int(page1[-1]) and len(page2) == 10
        shot("04-page-2")
        page.locator("#prev").click()
        expect(page.locator("#page-no")).to_have_text("Page 1")
        assert page.locator("#tickets tbody tr td:first-child").all_inner_texts() == page1

        # Auto-refresh: a ticket created while the page polls shows up, marked new.
        page.locator("#auto-refresh").check()
        expect(page.locator("#auto-refresh")).to_be_checked()
        ledger_emit([event("created", "demo", 80, 1_691_000_000_000, execute_uuid="SCTNEW", order_name="fresh",
                           creator="bob", region_ids="r")])
        expect(page.locator("#tickets tbody tr[data-order-id='80']")).to_have_class("new", timeout=20_000)
        expect(page.locator("#total")).to_have_text("Total: 33")
        shot("05-auto-refresh")
        page.locator("#auto-refresh").uncheck()
        expect(page.locator("#auto-refresh")).not_to_be_checked()

        # A ticket: its history in stream order, the rejected event with its reason.
        page.locator("#tickets tbody tr[data-order-id='74'] a").click()
        expect(page.locator("#ticket-title")).to_have_text("071201 (#74)")
        items = page.locator("#timeline li")
        seqs = [int(items.nth(i).get_attribute("data-seq")) for i in range(items.count())]
        assert len(seqs) == 5 and seqs == sorted(seqs)
        kinds = [items.nth(i).locator("div").first.inner_text() for i in range(5)]
        assert [k.split(" · ")[0].split(" ", 1)[1] for k in kinds] == ["created", "started", "paused", "cancelled", "started"]
        expect(page.locator("#timeline li.rejected .reason")).to_contain_text("ticket_closed: ticket is CANCELED, which is final")
        shot("06-ticket")
        page.locator("#back").click()
        expect(page.locator("#total")).to_have_text("Total: 33")

        # A ticket with a plan: its script, statistics, batches and instances, the secret masked.
        page.goto(ledger + "/console/#/ticket/SCTPLAN")
        expect(page.locator("#ticket-title")).to_have_text("nginx-rollout (#50)")
        expect(page.locator("#ticket-page dl.fields")).to_contain_text("version=1.25, token=******")
        assert "s3cret" not in page.content()
        stats = page.locator("#statistics tbody tr")
        assert [stats.nth(i).inner_text().split("\t")[:2] for i in range(5)] == \
            [["READY", "2"], ["PROCESSING", "1"], ["ABNORMAL", "1"], ["CANCELED", "0"], ["FINISHED", "1"]]
        inst = page.locator("#instances tbody tr")
        expect(inst).to_have_count(3)
        expect(inst.nth(1)).to_contain_text("exit 1: disk full")
        expect(inst.nth(0)).to_contain_text("2.0 s")
        shot("07-ticket-with-plan")
        page.goto(ledger + "/console/#/list")

        # The audit page: the dead letter is listed with its reason.
        page.locator("#nav-audit").click()
        expect(page.locator("#reasons")).to_contain_text("ticket_closed: 1")
        expect(page.locator("#audit-page dl.fields").first).to_contain_text("Lag (seconds)0")
        shot("08-audit")

        # Chinese: the labels, and the API's messages in Chinese.
        page.locator("#lang").select_option("zh-cn")
        expect(page.locator("#nav-list")).to_have_text("工单")
        page.locator("#nav-list").click()
        expect(page.locator("#total")).to_have_text("总数: 33")
        shot("09-chinese")
        page.locator("#signout").click()
        page.get_by_label("令牌（X-Auth-Token）").fill("wrong-token")
        page.locator("#login-submit").click()
        expect(page.locator("#error")).to_contain_text("X-Auth-Token 无效")
        shot("10-chinese-error")

        # A phone's width still shows the list.
        page.get_by_label("令牌（X-Auth-Token）").fill(TOKEN)
        page.locator("#login-submit").click()
        page.set_viewport_size({"width": 390, "height": 844})
        expect(page.locator("#tickets")).to_be_visible()
        shot("11-phone")
        browser.close()

    assert dialogs == [], f"a script ran: {dialogs}"
    assert [e for e in console_errors if "401" not in e and "Failed to load resource" not in e] == []
    others = [u for u in requests if not u.startswith(ledger + "/")]
    assert others == [], f"requests to other origins: {others}"
    assert any("/v1/job/script/orders" in u for u in requests)
