#!/usr/bin/env python3
"""Signs in at api-server through the development OpenID provider like a
browser (cookie jar, redirects by hand, the provider's login and consent
forms) and prints the value of the edgelink_session cookie.

Usage: signin.py API_URL USER   (standard library only)
"""
import http.cookiejar
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

api, user = sys.argv[1].rstrip("/"), sys.argv[2]
jar = http.cookiejar.CookieJar()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)


def fetch(url, data=None):
    try:
        r = opener.open(urllib.request.Request(url, data=data), timeout=10)
        return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


url, data = f"{api}/api/auth/login?return_to=/api/auth/me", None
for _ in range(20):
    status, headers, body = fetch(url, data)
    data = None
    if status in (301, 302, 303):
        url = urllib.parse.urljoin(url, headers["Location"])
        continue
    if url.startswith(api):
        break
    form = re.search(r'<form[^>]*action="([^"]+)"', body)
    if not form:
        sys.exit(f"no form at {url}: {body[:200]}")
    fields = dict(re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', body))
    if 'name="login"' in body:
        fields.update(login=user, password="bench")
    url = urllib.parse.urljoin(url, form.group(1).replace("&amp;", "&"))
    data = urllib.parse.urlencode(fields).encode()

for c in jar:
    if c.name in ("edgelink_session", "__Host-edgelink_session"):
        print(c.value)
        sys.exit(0)
sys.exit("signed in, but no session cookie was set")
