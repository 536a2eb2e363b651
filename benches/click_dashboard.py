#!/usr/bin/env python3
"""Clicks through the dashboard as an ICT lead would, for a while, and says
how long each page took (client wall time over loopback, so server time plus
a little).

    click_dashboard.py BASE_URL USER PASSWORD SECONDS CLIENT [PAUSE] > summary.json

Logs in (GET /login for the CSRF token, POST it), then visits in turn, until
SECONDS have passed: the overview, the explorer (first screen of the last 7
days, blocked only, by device, by name, its second page), the device page of
CLIENT, a CSV export of that device's last 7 days (read to the end), and the
policy, change log, users and audit pages. One visit at a time, PAUSE
seconds between them (default 0: no pause, a busier user than any real one;
1 is a quick reader). Used by benches/log_bed.sh
(run "dashboard") to see whether the DNS path's p99 moves meanwhile.
"""
import http.cookiejar
import json
import re
import statistics
import sys
import time
import urllib.parse
import urllib.request


def main():
    base, user, password, seconds, client = sys.argv[1:6]
    seconds = float(seconds)
    pause = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login = opener.open(f"{base}/login").read().decode()
    token = re.search(r'name="csrf" value="([^"]+)"', login)
    fields = {"name": user, "password": password}
    if token:
        fields["csrf"] = token.group(1)
    # A form post must say it comes from the dashboard's own page (Origin).
    request = urllib.request.Request(f"{base}/login", data=urllib.parse.urlencode(fields).encode(),
                                     headers={"Origin": base})
    answer = opener.open(request)
    if "/login" in answer.geturl():
        sys.exit(f"login as {user} refused")
    device = urllib.parse.quote(client, safe="")
    query = urllib.parse.urlencode
    pages = [
        "/",
        "/log",
        "/log?" + query({"decision": "blocked"}),
        "/log?" + query({"client": client}),
        "/log?" + query({"name": "google.com"}),
        f"/device/{device}",
        "/log.csv?" + query({"client": client, "window": "7d"}),
        "/policy",
        "/changes",
        "/users",
        "/audit",
    ]
    times = {page: [] for page in pages}
    failures = {}
    end = time.time() + seconds
    visits = 0
    while time.time() < end:
        for page in pages:
            started = time.perf_counter()
            try:
                with opener.open(base + page, timeout=30) as response:
                    body = response.read()
                    if page == "/log":
                        # The second page, as a reader paging down would.
                        after = re.search(rb'rel="next" href="(/log\?[^"]*)"', body)
                        if after:
                            opener.open(base + after.group(1).decode().replace("&amp;", "&"), timeout=30).read()
            except Exception as error:  # counted, reported, not fatal
                failures[page] = failures.get(page, 0) + 1
                print(f"{page}: {error}", file=sys.stderr)
                continue
            times[page].append((time.perf_counter() - started) * 1000)
            visits += 1
            time.sleep(pause)
            if time.time() >= end:
                break
    summary = {
        "visits": visits,
        "pause_s": pause,
        "failures": failures,
        "pages_ms": {
            page: {"n": len(ms), "median": round(statistics.median(ms), 1), "max": round(max(ms), 1)}
            for page, ms in times.items() if ms
        },
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
