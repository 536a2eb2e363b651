#!/usr/bin/env python3
"""The soak (issue 16, "Prove it holds"): the whole product on the loopback
bed for a bounded time at half its measured peak, with everything a school
does to it under way, checked at the end. Started by benches/soak.sh (which
builds the release binary and the bed); stdlib only.

    soak.py --bed DIR --hedgerow BIN [--duration 600] [--warmup SECONDS] [--peak-qps N] [--clients 8]
            [--results FILE] [--work DIR]

What runs, all on 127.0.0.1:
  - NSD, the bed's authority on port 5300 (started here unless it answers);
  - `hedgerow serve` (CPU 1) with the query log on, the dashboard on, the
    metrics listener on, alerts on with e-mail to a plain SMTP relay on
    loopback (`security = "none"`, allowed only to this machine) that this
    script runs (it speaks EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT and
    counts the messages), and a threshold rule that fires often:
    `soak-ads`, 3 blocked lookups in "ads" (the bed's blocked list) by one
    device within a minute, severity high (sent at once);
  - before it: the bed's allowed names once (warmup.txt), as
    loopback_bed.py measure does; the peak, unless --peak-qps is given: a
    15 s dnsperf max-rate run of the bed's mixed queries (queries.txt: 70%
    cached, 20% blocked, 10% misses), as measure does;
  - the load: dnsperf -Q peak/2 -c CLIENTS on CPU 0 over queries.txt for
    WARMUP + DURATION seconds. WARMUP (default: one pass of queries.txt at
    that rate plus 30 s, at least 120 s) fills what is bounded: the cache
    (bound 150,000 answers: the 100,000 allowed names and 50,000 misses, so
    it evicts as it stores and the misses stay misses when the file comes
    round again) and the query log's name dictionary (every name of the
    file). The log writer's SQLite page cache (64 MiB) fills as the
    database grows: within a minute or two at 60,000 queries/s, in several
    at 10,000. On 2026-12-01 at 59,521 queries/s the RSS rose from 263 MiB
    to 375 MiB over the first 155 s and stayed there (benches/results/
    soak-2026-12-01.jsonl), hence at least 120 s.
  Meanwhile, from the start of the warm-up until dnsperf ends:
  - every 60 s a whole-list reload: the list file gets a new marker name
    (soak-reload-K.adz) and `hedgerow reload --config` is run; in force when
    the new marker is blocked and the one before answers again;
  - every 30 s a policy change through the dashboard's JSON API as the admin
    (POST /api/policy/staff with X-CSRF-Token and Origin): a deny override
    of soak-deny.miss added, then removed, each with a reason; acknowledged
    when it answers 200 with the change, in force when one DNS check right
    after it sees the name blocked (added) or answered again (removed);
  - every 15 s a new device (a fresh 127.0.x.y source address) asks 3
    blocked names: rule soak-ads raises a high alert and an e-mail goes to
    the sink;
  - every 3 s a dashboard page as the admin, in turn: overview, explorer
    (first screen, blocked only), lists, alerts inbox, alert delivery,
    policy of the group, change log;
  - every 5 s the server's RSS (/proc/PID/status VmRSS).

Checked at the end (exit 1 when any fails):
  - dnsperf: queries lost 0, SERVFAIL 0. A failed query is one lost (no
    answer within dnsperf's 5 s) or answered SERVFAIL; NXDOMAIN is the
    blocked names' answer and NOERROR the rest, so both count as good;
  - RSS flat: the median of the last minute within 10% of the median of the
    first minute after the warm-up (the minute half way through is
    reported too: growth from there to the end says whether it is still
    rising);
  - log: rows in log_hourly gained during the soak (warm-up included) >=
    answers during it (dnsperf's completed + this script's own answered
    queries), counted after the server stopped (its writer flushes on
    shutdown), and the server's hedgerow_log_rows_dropped_total 0 over it;
  - every reload succeeded and was in force; every policy change was
    acknowledged and in force; every new device's alert was delivered: the
    sink received one e-mail for each high alert raised, and the outbox has
    nothing pending, retrying or failed (the blocked lookups the alerts'
    feed shed when its channel was full, hedgerow_alert_lookups_dropped_total,
    are reported, not checked: the feed sheds by design, and the new
    devices' alerts show whether alerts still came);
  - every page load answered 200.
One JSON line is appended to --results, and a summary printed.
"""
import argparse
import hashlib
import http.cookiejar
import json
import os
import random
import re
import shutil
import signal
import socket
import socketserver
import sqlite3
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

NSD_PORT = 5300
GROUP = "staff"
DENY_NAME = "soak-deny.miss"
UPSTREAM_ANSWER = "192.0.2.1"  # the bed's wildcard zones (adz, miss, ...) answer this
PAGES = ["/", "/log?decision=blocked", "/lists", "/alerts", "/alerts/delivery", f"/policy/{GROUP}", "/changes"]
RELOAD_EVERY = 60
POLICY_EVERY = 30
ALERT_EVERY = 15
PAGE_EVERY = 3
RSS_EVERY = 5
# The cache's bound in answers: the bed's 100,000 allowed names and room
# for 50,000 of its 150,000 misses, so it is full after the warm-up and
# evicts as it stores from then on (a miss comes round again only after
# 1.5 M queries, by when it has been evicted: misses stay misses).
CACHE_SIZE = 150_000


# --- DNS -------------------------------------------------------------------

def query(port, name, source="127.0.0.1", timeout=2.0):
    """One A query over UDP from `source`: (rcode, [IPv4 answers]) or None."""
    qid = random.randrange(65536)
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    packet += b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    packet += struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(timeout)
        try:
            s.sendto(packet, ("127.0.0.1", port))
            while True:
                reply = s.recv(4096)
                if len(reply) >= 12 and struct.unpack(">H", reply[:2])[0] == qid:
                    break
        except OSError:
            return None
    rcode = reply[3] & 15
    qd, an = struct.unpack(">HH", reply[4:8])
    at = 12
    for _ in range(qd):
        at = skip_name(reply, at) + 4
    addresses = []
    for _ in range(an):
        at = skip_name(reply, at)
        rtype, _, _, length = struct.unpack(">HHIH", reply[at:at + 10])
        at += 10
        if rtype == 1 and length == 4:
            addresses.append(socket.inet_ntoa(reply[at:at + 4]))
        at += length
    return rcode, addresses


def skip_name(packet, at):
    while True:
        length = packet[at]
        if length == 0:
            return at + 1
        if length & 0xC0:
            return at + 2
        at += 1 + length


def blocked(answer):
    """A blocked name's answer: NXDOMAIN, or the null address."""
    return answer is not None and (answer[0] == 3 or (answer[0] == 0 and answer[1] in (["0.0.0.0"], [])))


def resolved_bed_name(answer):
    """The bed's authority's answer for h00001.lab."""
    return answer is not None and answer[0] == 0 and answer[1] == ["10.0.0.1"]


def resolved(answer):
    return answer is not None and answer[0] == 0 and UPSTREAM_ANSWER in answer[1]


# --- SMTP sink ---------------------------------------------------------------

class SmtpSink(socketserver.ThreadingTCPServer):
    """A plain SMTP relay on loopback that accepts every message and counts it."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), SmtpHandler)
        self.lock = threading.Lock()
        self.messages = []  # (recipients, subject)

    def count(self):
        with self.lock:
            return len(self.messages)


class SmtpHandler(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        self.reply("220 soak-sink ESMTP")
        recipients, sender = [], None
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line.decode("utf-8", "replace").strip()
            word = verb.split(" ", 1)[0].upper()
            if word == "EHLO":
                self.wfile.write(b"250-soak-sink\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                self.wfile.flush()
            elif word == "HELO":
                self.reply("250 soak-sink")
            elif word == "MAIL":
                sender, recipients = verb, []
                self.reply("250 OK")
            elif word == "RCPT":
                if sender is None:
                    self.reply("503 MAIL first")
                else:
                    recipients.append(verb.split(":", 1)[-1].strip())
                    self.reply("250 OK")
            elif word == "DATA":
                if not recipients:
                    self.reply("503 RCPT first")
                    continue
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                subject = ""
                while True:
                    data = self.rfile.readline()
                    if not data:
                        return
                    if data in (b".\r\n", b".\n"):
                        break
                    if data.lower().startswith(b"subject:") and not subject:
                        subject = data.decode("utf-8", "replace")[8:].strip()
                with self.server.lock:
                    self.server.messages.append((list(recipients), subject))
                sender, recipients = None, []
                self.reply("250 OK queued")
            elif word in ("RSET", "NOOP"):
                if word == "RSET":
                    sender, recipients = None, []
                self.reply("250 OK")
            elif word == "QUIT":
                self.reply("221 Bye")
                return
            else:
                self.reply("502 Command not implemented")


# --- the dashboard -----------------------------------------------------------

class Dashboard:
    def __init__(self, base):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.csrf = None

    def login(self, user, password):
        page = self.opener.open(f"{self.base}/login", timeout=30).read().decode()
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        fields = {"name": user, "password": password}
        if token:
            fields["csrf"] = token.group(1)
        request = urllib.request.Request(f"{self.base}/login", data=urllib.parse.urlencode(fields).encode(),
                                         headers={"Origin": self.base})
        answer = self.opener.open(request, timeout=30)
        if "/login" in answer.geturl():
            raise SystemExit(f"login as {user} refused")
        self.csrf = self.get_json("/api/me")["csrf_token"]

    def get(self, path):
        with self.opener.open(self.base + path, timeout=30) as response:
            body = response.read()
            return response.status, body

    def get_json(self, path):
        return json.loads(self.get(path)[1])

    def post_json(self, path, body):
        request = urllib.request.Request(
            self.base + path, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "X-CSRF-Token": self.csrf, "Origin": self.base})
        try:
            with self.opener.open(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode("utf-8", "replace")


def metrics(port):
    """The metrics listener's figures: {name or name{labels}: value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                pass
    return out


# --- helpers -----------------------------------------------------------------

def free_port(kinds=(socket.SOCK_STREAM,)):
    """A port free for every socket kind in `kinds` on 127.0.0.1."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kinds[0]) as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                for kind in kinds[1:]:
                    with socket.socket(socket.AF_INET, kind) as other:
                        other.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit("no free port")


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def rows_in_log(database):
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute("SELECT coalesce(sum(count), 0) FROM log_hourly").fetchone()[0]


def parse_dnsperf(out):
    stats = {}
    for key, rx in (("sent", r"Queries sent:\s+(\d+)"), ("completed", r"Queries completed:\s+(\d+)"),
                    ("lost", r"Queries lost:\s+(\d+)"), ("qps", r"Queries per second:\s+([\d.]+)")):
        m = re.search(rx, out)
        stats[key] = (float(m.group(1)) if key == "qps" else int(m.group(1))) if m else None
    m = re.search(r"Response codes:\s+(.*)", out)
    stats["rcodes"] = {code: int(n) for code, n in re.findall(r"([A-Z]+) (\d+)", m.group(1))} if m else {}
    m = re.search(r"Average Latency \(s\):\s+([\d.]+) \(min ([\d.]+), max ([\d.]+)\)", out)
    if m:
        stats["latency_avg_ms"] = round(float(m.group(1)) * 1000, 3)
        stats["latency_max_ms"] = round(float(m.group(3)) * 1000, 3)
    return stats


class Counter:
    """The script's own DNS answers (each is a row in the log)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.answered = 0
        self.unanswered = 0

    def ask(self, port, name, source="127.0.0.1"):
        answer = query(port, name, source)
        with self.lock:
            if answer is None:
                self.unanswered += 1
            else:
                self.answered += 1
        return answer


def every(seconds, stop, work, errors):
    """Runs work() every `seconds` (the first after one period) until stop
    is set; an exception is recorded in `errors` (a failed check) and the
    work goes on."""
    next_at = time.monotonic() + seconds
    while not stop.wait(max(0.0, next_at - time.monotonic())):
        try:
            work()
        except Exception as error:
            errors.append(f"{work.__name__}: {error!r}")
            print(f"soak: {work.__name__}: {error!r}", file=sys.stderr)
        next_at += seconds


# --- the soak ----------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bed", required=True)
    parser.add_argument("--hedgerow", required=True)
    parser.add_argument("--duration", type=int, default=600)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--peak-qps", type=float)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--results")
    parser.add_argument("--work")
    args = parser.parse_args()
    bed = os.path.abspath(args.bed)
    hedgerow = os.path.abspath(args.hedgerow)
    work = os.path.abspath(args.work or os.path.join(bed, time.strftime("soak-%Y%m%dT%H%M%S", time.gmtime())))
    os.makedirs(f"{work}/lists", exist_ok=True)
    dns_port = free_port((socket.SOCK_DGRAM, socket.SOCK_STREAM))
    web_port, metrics_port = free_port(), free_port()
    base = f"http://127.0.0.1:{web_port}"
    started_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    procs = []

    def cleanup():
        for proc in reversed(procs):
            if proc.poll() is None:
                try:
                    proc.terminate()
                    proc.wait(30)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    proc.kill()

    sink = SmtpSink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()

    # The blocked list, copied so reloads can change it (the bed's stays as it is).
    blocked_names = open(f"{bed}/blocked.txt").read().split()
    list_file = f"{work}/soak-blocked.txt"

    def write_list(marker):
        with open(list_file + ".new", "w") as f:
            f.write("\n".join(blocked_names) + f"\nsoak-reload-{marker}.adz\n")
        os.replace(list_file + ".new", list_file)

    write_list(0)
    with open(f"{work}/lists/bed.toml", "w") as f:
        f.write(f'[[source]]\nid = "bed-blocked"\ncategory = "ads"\nformat = "domains"\npath = "{list_file}"\n')
    config = f"{work}/hedgerow.toml"
    with open(config, "w") as f:
        f.write(f"""# Written by benches/soak.py
data_dir = "{work}/data"
[dns]
listen = ["127.0.0.1:{dns_port}"]
[upstream]
mode = "forward"
[[upstream.servers]]
address = "127.0.0.1:{NSD_PORT}"
[cache]
size = {CACHE_SIZE}
memory_mb = 512
[lists]
dir = "{work}/lists"
update_hours = 0
[dashboard]
listen = ["127.0.0.1:{web_port}"]
hosts = ["127.0.0.1"]
[metrics]
listen = "127.0.0.1:{metrics_port}"
[alerts]
quiet_minutes = 1
dashboard_url = "{base}"
[alerts.email]
server = "127.0.0.1"
port = {sink.server_address[1]}
security = "none"
from = "hedgerow@soak.example"
high = ["dsl@soak.example"]
daily_digest = "off"
weekly_digest = "off"
[alerts.rules.soak-ads]
kind = "repeated"
category = "ads"
count = 3
minutes = 1
severity = "high"
[groups.{GROUP}]
block = ["default", "ads"]
[[networks]]
name = "bench"
cidrs = ["127.0.0.0/8"]
group = "{GROUP}"
""")
    run = lambda *cmd, **kw: subprocess.run([hedgerow, *cmd, "--config", config], check=True, **kw)
    run("lists", "compile", stdout=subprocess.DEVNULL)
    password = "soak-" + hashlib.sha256(os.urandom(16)).hexdigest()[:20]
    run("user", "add", "soak-admin", "--role", "admin", "--password-stdin", input=password + "\n", text=True,
        stdout=subprocess.DEVNULL)

    try:
        if not resolved_bed_name(query(NSD_PORT, "h00001.lab", timeout=0.3)):
            out = subprocess.run([sys.executable, BEDTOOL, "authority", bed], capture_output=True, text=True,
                                 check=True).stdout
            nsd_pid = int(out.split()[-1])
        else:
            nsd_pid = None  # the bed's authority is already running: use it
        server_log = open(f"{work}/server.log", "w")
        server = subprocess.Popen(["taskset", "-c", "1", hedgerow, "serve", "--config", config],
                                  stdout=server_log, stderr=subprocess.STDOUT)
        procs.append(server)
        for _ in range(600):
            if server.poll() is not None:
                raise SystemExit(f"the server exited with {server.returncode}; see {work}/server.log")
            if query(dns_port, "h00001.lab", timeout=0.2):
                break
            time.sleep(0.1)
        perf = ["taskset", "-c", "0", "dnsperf", "-s", "127.0.0.1", "-p", str(dns_port)]
        subprocess.run(perf + ["-d", f"{bed}/warmup.txt", "-n", "1", "-q", "200"], capture_output=True, check=True)
        peak = args.peak_qps
        if not peak:
            out = subprocess.run(perf + ["-d", f"{bed}/queries.txt", "-l", "15", "-q", "200", "-c", "8"],
                                 capture_output=True, text=True, check=True).stdout
            peak = parse_dnsperf(out)["qps"]
            print(f"measured peak: {peak:.0f} queries/s (15 s, mixed)", file=sys.stderr)
        rate = int(peak / 2)
        # The warm-up: one pass of the query file at the soak's rate (so
        # every name is in the log's dictionary and the cache is full),
        # and 30 s more, at least 120 s in all (at 60,000 queries/s the RSS
        # was still rising 150 s in, then flat: see the header).
        lines = sum(1 for _ in open(f"{bed}/queries.txt"))
        warmup = args.warmup if args.warmup is not None else max(120, -(-lines // rate) + 30)

        dash = Dashboard(base)
        dash.login("soak-admin", password)
        time.sleep(2)  # the writer's last batch of the warm-up (flush_interval is 0.5 s)
        counter = Counter()
        high_alerts = lambda: dash.get_json("/api/alerts?severity=high")["total"]
        before = {"rows": rows_in_log(f"{work}/data/hedgerow.db"), "metrics": metrics(metrics_port),
                  "emails": sink.count(), "high_alerts": high_alerts()}

        stop = threading.Event()
        state = {"rss": [], "reloads": [], "policy": [], "devices": [], "pages": {}, "page_failures": [],
                 "errors": []}
        lock = threading.Lock()
        t0 = time.monotonic()

        def sample_rss():
            with lock:
                state["rss"].append((round(time.monotonic() - t0, 1), rss_kib(server.pid)))

        reload_marker = [0]

        def reload_lists():
            marker = reload_marker[0] + 1
            write_list(marker)
            started = time.monotonic()
            done = subprocess.run([hedgerow, "reload", "--config", config], capture_output=True, text=True)
            seconds = round(time.monotonic() - started, 2)
            new = counter.ask(dns_port, f"soak-reload-{marker}.adz")
            old = counter.ask(dns_port, f"soak-reload-{marker - 1}.adz")
            ok = done.returncode == 0 and blocked(new) and resolved(old)
            reload_marker[0] = marker
            with lock:
                state["reloads"].append({"marker": marker, "ok": ok, "seconds": seconds, "exit": done.returncode,
                                         "new": new, "old": old,
                                         "said": (done.stdout + done.stderr).strip().splitlines()[-1:]})

        adding = [True]

        def change_policy():
            kind = "override-add" if adding[0] else "override-remove"
            n = len(state["policy"]) + 1
            started = time.monotonic()
            status, body = dash.post_json(f"/api/policy/{GROUP}", {
                "kind": kind, "list": "deny", "name": DENY_NAME, "reason": f"soak change {n}: {kind}"})
            seconds = round(time.monotonic() - started, 2)
            answer = counter.ask(dns_port, DENY_NAME)
            acknowledged = status == 200 and isinstance(body, dict) and body.get("id") is not None
            in_force = blocked(answer) if adding[0] else resolved(answer)
            adding[0] = not adding[0]
            with lock:
                state["policy"].append({"kind": kind, "status": status, "acknowledged": acknowledged,
                                        "in_force": in_force, "seconds": seconds, "answer": answer,
                                        "change": body.get("id") if isinstance(body, dict) else body})

        def new_device():
            n = len(state["devices"]) + 2
            source = f"127.0.{n // 250}.{n % 250 + 2}"
            names = random.sample(blocked_names, 3)
            answers = [counter.ask(dns_port, name, source) for name in names]
            with lock:
                state["devices"].append({"source": source, "blocked": all(blocked(a) for a in answers)})

        page_index = [0]

        def load_page():
            page = PAGES[page_index[0] % len(PAGES)]
            page_index[0] += 1
            started = time.perf_counter()
            try:
                status, _ = dash.get(page)
                ok = status == 200
            except Exception as error:  # counted and reported
                ok, status = False, str(error)
            ms = (time.perf_counter() - started) * 1000
            with lock:
                state["pages"].setdefault(page, []).append(ms)
                if not ok:
                    state["page_failures"].append({"page": page, "status": status})

        sample_rss()
        print(f"soak: {warmup} s warm-up + {args.duration} s at {rate} queries/s ({args.clients} clients) on 127.0.0.1:{dns_port}, "
              f"dashboard {base}, work {work}", file=sys.stderr)
        load = subprocess.Popen(perf + ["-d", f"{bed}/queries.txt", "-l", str(warmup + args.duration), "-Q", str(rate),
                                        "-q", "500", "-c", str(args.clients)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(load)
        threads = [threading.Thread(target=every, args=(period, stop, job, state["errors"]), daemon=True)
                   for period, job in ((RSS_EVERY, sample_rss), (RELOAD_EVERY, reload_lists),
                                       (POLICY_EVERY, change_policy), (ALERT_EVERY, new_device),
                                       (PAGE_EVERY, load_page))]
        for thread in threads:
            thread.start()
        perf_out, _ = load.communicate()
        stop.set()
        for thread in threads:
            thread.join()
        with open(f"{work}/dnsperf.txt", "w") as f:
            f.write(perf_out)
        sample_rss()

        # The last alerts' e-mails: the outbox empties within seconds.
        outbox = {}
        for _ in range(60):
            outbox = dash.get_json("/api/alerts/summary").get("outbox", {})
            if not outbox.get("pending") and not outbox.get("retrying"):
                break
            time.sleep(1)
        raised = high_alerts() - before["high_alerts"]
        time.sleep(2)  # the writer's last batch
        after_metrics = metrics(metrics_port)
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        rows_after = rows_in_log(f"{work}/data/hedgerow.db")
        emails = sink.count() - before["emails"]
    finally:
        cleanup()
        if "nsd_pid" in locals() and nsd_pid:
            try:
                os.kill(nsd_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        sink.shutdown()

    # --- figures and checks --------------------------------------------------
    perf = parse_dnsperf(perf_out)
    rss = [(t, kib) for t, kib in state["rss"] if kib]
    first = [kib for t, kib in rss if warmup <= t <= warmup + 60] or [rss[0][1]]
    last = [kib for t, kib in rss if t >= rss[-1][0] - 60] or [rss[-1][1]]
    first_mib, last_mib = statistics.median(first) / 1024, statistics.median(last) / 1024
    max_mib = max(kib for _, kib in rss) / 1024
    growth = (last_mib - first_mib) / first_mib
    # Still rising at the end? The minute half way through the measured
    # part against the last (reported, not checked).
    middle_t = warmup + args.duration / 2
    middle = [kib for t, kib in rss if middle_t - 30 <= t <= middle_t + 30] or [rss[-1][1]]
    middle_mib = statistics.median(middle) / 1024
    second_half = (last_mib - middle_mib) / middle_mib
    answered = perf["completed"] or 0
    expected_rows = answered + counter.answered
    logged = rows_after - before["rows"]
    dropped_metric = after_metrics.get("hedgerow_log_rows_dropped_total", 0) - before["metrics"].get(
        "hedgerow_log_rows_dropped_total", 0)
    alert_feed_dropped = after_metrics.get("hedgerow_alert_lookups_dropped_total", 0)
    devices = state["devices"]
    pages_loaded = sum(len(v) for v in state["pages"].values())
    servfail = perf["rcodes"].get("SERVFAIL", 0)
    checks = {
        "no query lost": perf["lost"] == 0,
        "no SERVFAIL": servfail == 0,
        "RSS flat (last minute within 10% of first)": abs(growth) <= 0.10,
        "no log row missing": logged >= expected_rows,
        "log writer dropped 0": dropped_metric == 0,
        "every reload done and in force": bool(state["reloads"]) and all(r["ok"] for r in state["reloads"]),
        "every policy change acknowledged and in force": bool(state["policy"]) and all(
            p["acknowledged"] and p["in_force"] for p in state["policy"]),
        "every new device's alert raised and e-mailed": bool(devices) and all(d["blocked"] for d in devices)
                                                        and raised >= len(devices) and emails == raised,
        "outbox empty, nothing failed": not any(outbox.get(k) for k in ("pending", "retrying", "failed")),
        "no page load failed": not state["page_failures"] and pages_loaded > 0,
        "no error in the script's own work": not state["errors"],
    }
    result = {
        "name": "soak", "started": started_utc, "duration_s": args.duration, "warmup_s": warmup, "peak_qps": round(peak),
        "peak_measured": not args.peak_qps, "rate_qps": rate, "clients": args.clients,
        "queries": {"sent": perf["sent"], "completed": perf["completed"], "lost": perf["lost"],
                    "qps": perf["qps"], "rcodes": perf["rcodes"], "latency_avg_ms": perf.get("latency_avg_ms"),
                    "latency_max_ms": perf.get("latency_max_ms"),
                    "script_answered": counter.answered, "script_unanswered": counter.unanswered},
        "rss_mib": {"first_minute_median": round(first_mib, 1), "last_minute_median": round(last_mib, 1),
                    "max": round(max_mib, 1), "growth_pct": round(100 * growth, 1), "middle_minute_median": round(middle_mib, 1),
                    "second_half_growth_pct": round(100 * second_half, 1), "samples": len(rss)},
        "log": {"answers": expected_rows, "rows": logged, "missing": max(0, expected_rows - logged),
                "extra": max(0, logged - expected_rows), "writer_dropped_total": dropped_metric,
                "rows_written_metric": after_metrics.get("hedgerow_log_rows_written_total")},
        "cache": {"bound": CACHE_SIZE, "entries_before": before["metrics"].get("hedgerow_cache_entries"),
                  "entries_after": after_metrics.get("hedgerow_cache_entries")},
        "reloads": {"done": len(state["reloads"]), "in_force": sum(r["ok"] for r in state["reloads"]),
                    "seconds": [r["seconds"] for r in state["reloads"]],
                    "server_reloads_ok": after_metrics.get('hedgerow_reloads_total{result="success"}'),
                    "server_reloads_failed": after_metrics.get('hedgerow_reloads_total{result="failure"}')},
        "policy_changes": {"sent": len(state["policy"]), "acknowledged": sum(p["acknowledged"] for p in state["policy"]),
                           "in_force": sum(p["in_force"] for p in state["policy"]),
                           "seconds": [p["seconds"] for p in state["policy"]]},
        "alerts": {"new_devices": len(devices), "high_alerts_raised": raised, "emails_received": emails, "outbox": outbox,
                   "feed_dropped_total": alert_feed_dropped},
        "pages": {"loads": pages_loaded, "failures": len(state["page_failures"]),
                  "ms": {p: {"n": len(v), "median": round(statistics.median(v), 1), "max": round(max(v), 1)}
                         for p, v in state["pages"].items()}},
        "errors": state["errors"], "checks": checks, "passed": all(checks.values()), "work": work,
    }
    if args.results:
        with open(args.results, "a") as f:
            f.write(json.dumps(result) + "\n")
    with open(f"{work}/result.json", "w") as f:
        json.dump({**result, "detail": {"rss": state["rss"], "reloads": state["reloads"], "policy": state["policy"],
                                        "page_failures": state["page_failures"]}}, f, indent=1)

    q = result["queries"]
    print(f"""
Soak: {warmup} s warm-up + {args.duration} s at {rate} queries/s (half of {peak:.0f}{' measured' if not args.peak_qps else ' given'}), {args.clients} clients
  queries    sent {q['sent']}, completed {q['completed']}, lost {q['lost']}; {q['qps']} q/s; response codes {q['rcodes']}
             (failed = lost or SERVFAIL; NXDOMAIN is the blocked names' answer); script's own {counter.answered} answered, {counter.unanswered} not
  RSS        first minute {first_mib:.1f} MiB, last minute {last_mib:.1f} MiB ({100 * growth:+.1f}%), max {max_mib:.1f} MiB: {'flat' if abs(growth) <= 0.10 else 'NOT flat'}
             (the minute half way {middle_mib:.1f} MiB: {100 * second_half:+.1f}% from there to the last)
  cache      {result['cache']['entries_before']:.0f} answers at the start, {result['cache']['entries_after']:.0f} at the end (bound {CACHE_SIZE})
  log        {expected_rows} answers, {logged} rows in log_hourly, {max(0, expected_rows - logged)} missing; writer dropped {dropped_metric:.0f}
  reloads    {len(state['reloads'])} done, {result['reloads']['in_force']} in force; seconds {result['reloads']['seconds']}
  policy     {len(state['policy'])} changes, {result['policy_changes']['acknowledged']} acknowledged, {result['policy_changes']['in_force']} in force
  alerts     {len(devices)} new devices, {raised} high alerts raised, {emails} e-mails received; outbox {outbox}; feed dropped {alert_feed_dropped:.0f}
  pages      {pages_loaded} loads, {len(state['page_failures'])} failed; slowest median {max((v['median'] for v in result['pages']['ms'].values()), default=0)} ms""")
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    print(f"  work folder: {work}")
    return 0 if result["passed"] else 1


BEDTOOL = os.environ.get("BEDTOOL", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "..", "..", "shared", "bench", "loopback_bed.py"))

if __name__ == "__main__":
    sys.exit(main())
