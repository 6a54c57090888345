#!/usr/bin/python3
"""A Launchpad stand-in on loopback for Kiln's end-to-end tests.

Two HTTP servers in one process, sharing one set of people:

- an OpenID 2.0 provider built from python3-openid's server and python-openid-teams (the
  library family Ubuntu's own login is built on): `/+openid` answers checkid_setup (auto-approving
  whoever the test "signed in" at the provider, with SReg nickname and e-mail and the Launchpad
  teams extension) and check_authentication; identities are `{openid}/+id/{name}`;
- Launchpad's REST API, only as far as Kiln reads it: `GET {api}/devel/~{name}/super_teams`,
  a paged collection in Launchpad's wire format (`total_size`, `start`, `entries`,
  `next_collection_link`, ...), 404 for an unknown person.

The test drives it through `/_test/...` on the provider's port (JSON bodies):
- `PUT /_test/people/{name}` `{"teams": [...], "email": "..."}`: a person and the teams they are in;
- `PUT /_test/session` `{"name": ..., ...}`: who is signed in at the provider and how it answers
  (see SESSION_DEFAULTS);
- `PUT /_test/api` `{"fail": bool, "page_size": n}`: the REST API fails (503) or pages by n;
- `GET /_test/stats`: what was asked (REST reads per person, check_authentication verdicts, the
  teams the last checkid_setup asked about).

It prints `{"openid": URL, "api": URL}` on one line when it listens, and exits when its standard
input closes.
"""

import json
import os
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from openid.extensions import sreg
from openid.message import OPENID_NS
from openid.server.server import (
    CheckIDRequest, Encoder, ENCODE_HTML_FORM, ProtocolError, Server)
from openid.store.memstore import MemoryStore
from openid_teams.teams import TeamsRequest, TeamsResponse, teams_uri

SESSION_DEFAULTS = {
    # The account signed in at the provider (None: the provider answers "cancel").
    "name": None,
    # Answer with an auto-submitted form POST instead of a redirect.
    "form_post": False,
    # Put this `lp.is_member` in the answer after signing (so it is not in openid.signed).
    "unsigned_is_member": None,
    # Sign this response nonce instead of a fresh one (an OP that repeats itself).
    "nonce": None,
    # Sign this claimed id / identity instead of `{openid}/+id/{name}`.
    "claimed_id": None,
    # Sign this op_endpoint instead of the real one.
    "op_endpoint": None,
}

lock = threading.Lock()
people = {}  # name -> {"teams": [...], "email": str}
session = dict(SESSION_DEFAULTS)
api_mode = {"fail": False, "page_size": 75}
stats = {
    "super_teams": {},  # name -> {"ok": n, "failed": n}
    "check_authentication": {"valid": 0, "invalid": 0},
    "query_membership": None,
}

openid_base = None
api_base = None
op = None


def reply(handler, code, body=b"", content_type="text/plain; charset=utf-8", headers=None):
    if isinstance(body, str):
        body = body.encode("utf-8")
    handler.send_response(code)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(body)


def read_body(handler):
    n = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(n) if n else b""


class Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.server.server_port, fmt % args))


class Provider(Quiet):
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/+openid":
            return self.openid(dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True)))
        if url.path.startswith("/+id/"):
            # What discovery would find (Kiln pins the endpoint and does no discovery).
            page = ('<html><head><link rel="openid2.provider" href="%s/+openid">'
                    '</head><body></body></html>' % openid_base)
            return reply(self, 200, page, "text/html; charset=utf-8")
        if url.path == "/_test/stats":
            with lock:
                return reply(self, 200, json.dumps(stats), "application/json")
        reply(self, 404, "not found")

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/+openid":
            body = read_body(self).decode("utf-8")
            return self.openid(dict(urllib.parse.parse_qsl(body, keep_blank_values=True)))
        reply(self, 404, "not found")

    def do_PUT(self):
        url = urllib.parse.urlsplit(self.path)
        data = json.loads(read_body(self) or b"{}")
        with lock:
            if url.path.startswith("/_test/people/"):
                name = url.path[len("/_test/people/"):]
                people[name] = {"teams": list(data.get("teams", [])),
                                "email": data.get("email", name + "@example.org")}
            elif url.path == "/_test/session":
                unknown = set(data) - set(SESSION_DEFAULTS)
                if unknown:
                    return reply(self, 400, "unknown session keys %s" % sorted(unknown))
                session.clear()
                session.update(SESSION_DEFAULTS)
                session.update(data)
            elif url.path == "/_test/api":
                api_mode.update(data)
            else:
                return reply(self, 404, "not found")
        reply(self, 204)

    def openid(self, query):
        try:
            request = op.decodeRequest(query)
        except ProtocolError as e:
            return self.send_web(op.encodeResponse(e))
        if request is None:
            return reply(self, 400, "not an OpenID request")
        if isinstance(request, CheckIDRequest):
            return self.checkid(request)
        response = op.handleRequest(request)
        if request.mode == "check_authentication":
            valid = response.fields.getArg(OPENID_NS, "is_valid") == "true"
            with lock:
                stats["check_authentication"]["valid" if valid else "invalid"] += 1
        self.send_web(op.encodeResponse(response))

    def checkid(self, request):
        if not request.trustRootValid():
            return reply(self, 400, "return_to %s is not under realm %s"
                         % (request.return_to, request.trust_root))
        with lock:
            s = dict(session)
            person = people.get(s["name"]) if s["name"] else None
        teams_request = TeamsRequest.fromOpenIDRequest(request)
        with lock:
            stats["query_membership"] = teams_request.requestedTeams()
        if person is None:
            return self.send_web(op.encodeResponse(request.answer(False)))
        name = s["name"]
        identity = s["claimed_id"] or "%s/+id/%s" % (openid_base, name)
        response = request.answer(True, identity=identity)
        if s["op_endpoint"]:
            response.fields.setArg(OPENID_NS, "op_endpoint", s["op_endpoint"])
        if s["nonce"]:
            response.fields.setArg(OPENID_NS, "response_nonce", s["nonce"])
        sreg_request = sreg.SRegRequest.fromOpenIDRequest(request)
        response.addExtension(sreg.SRegResponse.extractResponse(
            sreg_request, {"nickname": name, "email": person["email"]}))
        if teams_request.wereTeamsRequested():
            response.addExtension(
                TeamsResponse.extractResponse(teams_request, person["teams"]))
        if s["unsigned_is_member"] is not None:
            if not response.fields.hasKey(teams_uri, "is_member"):
                response.addExtension(TeamsResponse([]))
            response.fields.delArg(teams_uri, "is_member")
        signed = op.signatory.sign(response)
        if s["unsigned_is_member"] is not None:
            signed.fields.setArg(teams_uri, "is_member", s["unsigned_is_member"])
        if s["form_post"] or signed.whichEncoding() == ENCODE_HTML_FORM:
            return reply(self, 200, signed.toHTML(), "text/html; charset=utf-8")
        self.send_web(Encoder().encode(signed))

    def send_web(self, web):
        body = web.body or b""
        ctype = "text/html; charset=utf-8" if web.code == 200 and (
            isinstance(body, str) and body.lstrip().startswith("<")) else "text/plain; charset=utf-8"
        headers = {k.title(): v for k, v in web.headers.items()}
        reply(self, web.code, body, ctype, headers)


class RestApi(Quiet):
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.split("/")
        # /devel/~name/super_teams
        if len(parts) != 4 or parts[1] != "devel" or not parts[2].startswith("~") \
                or parts[3] != "super_teams":
            return reply(self, 404, "Object: <Launchpad>, name: %r" % url.path)
        name = parts[2][1:]
        q = dict(urllib.parse.parse_qsl(url.query))
        with lock:
            count = stats["super_teams"].setdefault(name, {"ok": 0, "failed": 0})
            if api_mode["fail"]:
                count["failed"] += 1
                return reply(self, 503, "Service Unavailable")
            person = people.get(name)
            if person is None:
                count["ok"] += 1
                return reply(self, 404, "Object: <lp.registry.model.personset.PersonSet>, "
                             "name: '~%s'" % name)
            teams = sorted(person["teams"])
            size = int(q.get("ws.size", api_mode["page_size"]))
            count["ok"] += 1
        start = int(q.get("ws.start", 0))
        collection = "%s/devel/~%s/super_teams" % (api_base, name)
        page = {
            "total_size": len(teams),
            "start": start,
            "entries": [team_entry(t) for t in teams[start:start + size]],
            "resource_type_link": "%s/devel/#team-page-resource" % api_base,
        }
        if start + size < len(teams):
            page["next_collection_link"] = "%s?ws.size=%d&memo=%d&ws.start=%d" % (
                collection, size, start + size, start + size)
        if start > 0:
            page["prev_collection_link"] = "%s?ws.size=%d&direction=backwards&memo=%d&ws.start=%d" % (
                collection, size, start, max(0, start - size))
        reply(self, 200, json.dumps(page), "application/json")


def team_entry(name):
    link = "%s/devel/~%s" % (api_base, name)
    return {
        "self_link": link,
        "web_link": "https://launchpad.net/~%s" % name,
        "resource_type_link": "%s/devel/#team" % api_base,
        "name": name,
        "display_name": name.replace("-", " ").title(),
        "is_team": True,
        "is_valid": True,
        "private": False,
        "visibility": "Public",
        "membership_policy": "Restricted Team",
        "members_collection_link": link + "/members",
        "http_etag": '"%x-0"' % (abs(hash(name)) & 0xffffffff),
    }


def main():
    global openid_base, api_base, op
    provider = ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    api = ThreadingHTTPServer(("127.0.0.1", 0), RestApi)
    provider.daemon_threads = api.daemon_threads = True
    openid_base = "http://127.0.0.1:%d" % provider.server_port
    api_base = "http://127.0.0.1:%d" % api.server_port
    op = Server(MemoryStore(), openid_base + "/+openid")
    for s in (provider, api):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print(json.dumps({"openid": openid_base, "api": api_base + "/devel"}), flush=True)
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    main()
