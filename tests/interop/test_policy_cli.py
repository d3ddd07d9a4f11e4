"""`mcpgw policy check` and `mcpgw policy explain` as an operator uses them."""
import json
import shutil

from conftest import ROOT


def test_check_accepts_the_shipped_policies(mcpgw):
    status, out = mcpgw("policy", "check", "policies")
    assert status == 0, out
    assert "acme:" in out and "globex:" in out and out.strip().endswith("ok: 2 tenants, 1 global documents")


def test_check_names_file_rule_and_field(tmp_path):
    import subprocess
    from conftest import mcpgw_binary

    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    bad = tmp_path / "policies" / "globex" / "policy.json"
    document = json.loads(bad.read_text())
    document["rules"][3]["args"]["filename"]["detectors"] = ["shell_metacharacters", "xss"]
    bad.write_text(json.dumps(document))
    result = subprocess.run([mcpgw_binary(), "policy", "check", str(tmp_path / "policies")], capture_output=True, text=True)
    assert result.returncode == 1
    assert "globex/policy.json: rule X4: rules[3].args.filename.detectors[1]: unknown detector 'xss'" in result.stderr


def explain(mcpgw, *args):
    status, out = mcpgw("policy", "explain", "--policies", "policies", "--json", *args)
    return status, json.loads(out)


def test_explain_the_classic_traversal_denial(mcpgw):
    status, answer = explain(mcpgw, "--tenant", "acme", "--agent", "bot1", "--tool", "read_file", "--args", '{"path":"../../etc/passwd"}')
    assert status == 2
    assert answer["decision"] == "deny"
    assert answer["rule"] in ("A1", "R4")
    rules = {m["rule"]: m for m in answer["matches"]}
    assert rules["R4"]["effect"] == "deny" and rules["R1"]["effect"] == "allow"
    assert rules["R4"]["arguments"][0] == {"location": "path", "canonical_value": "../../etc/passwd", "problem": "contains '..'"}


def test_explain_shows_canonical_values(mcpgw):
    status, answer = explain(mcpgw, "--tenant", "acme", "--agent", "bot1", "--tool", "read_file", "--args", '{"opts":{"PATH":"%252e%252e/x"}}')
    assert status == 2 and answer["decision"] == "deny"
    values = [a["canonical_value"] for m in answer["matches"] for a in m["arguments"]]
    assert "../x" in values


def test_explain_allow_audit_and_rate_limits(mcpgw):
    status, answer = explain(mcpgw, "--tenant", "acme", "--agent", "bot1", "--tool", "write_file", "--args", '{"path":"a.txt"}')
    assert status == 0 and answer["decision"] == "audit" and answer["rule"] == "R2"
    assert [limit["id"] for limit in answer["rate_limits"]] == ["L1", "L2"]
    status, answer = explain(mcpgw, "--tenant", "globex", "--agent", "bot1", "--tool", "search_docs")
    assert status == 0 and answer["decision"] == "allow" and answer["rule"] == "X1"


def test_explain_other_methods(mcpgw):
    status, answer = explain(mcpgw, "--tenant", "acme", "--agent", "bot1", "--method", "resources/read", "--target", "file:///etc/passwd")
    assert status == 2 and answer["rule"] == "default"
    status, answer = explain(mcpgw, "--tenant", "acme", "--agent", "bot1", "--method", "resources/read", "--target", "file:///workspace/a.md")
    assert status == 0 and answer["rule"] == "A3"


def test_explain_and_evaluate_see_a_reads_uri_as_the_gateway_does(mcpgw, tmp_path):
    # The gateway decides resources/read with its params as the arguments, so an argument rule on `uri` applies; explain
    # and evaluate answered `allow` where the gateway denied (found by review).
    tenant = tmp_path / "alpha"
    tenant.mkdir()
    (tenant / "p.json").write_text(json.dumps({"name": "r", "default_action": "deny", "rules": [
        {"id": "P9", "action": "allow", "resources": ["file:///workspace/*"]},
        {"id": "P11", "action": "deny", "resources": ["file:///workspace/*"], "arg_deny": {"uri": "secret"}}]}))
    common = ("policy", "explain", "--policies", str(tmp_path), "--json", "--tenant", "alpha", "--agent", "w", "--method", "resources/read")
    status, out = mcpgw(*common, "--target", "file:///workspace/secret")
    assert status == 2 and json.loads(out)["rule"] == "P11", out
    status, out = mcpgw(*common, "--target", "file:///workspace/notes")
    assert status == 0 and json.loads(out)["rule"] == "P9", out
    # A `uri` in the arguments that is not the target is refused, not decided.
    status, out = mcpgw(*common, "--target", "file:///workspace/notes", "--args", '{"uri": "file:///workspace/secret"}')
    assert status != 0 and not out.strip(), out
    line = json.dumps({"tenant": "alpha", "agent": "w", "method": "resources/read", "target": "file:///workspace/secret"})
    status, out = mcpgw("policy", "evaluate", "--policies", str(tmp_path), stdin=line + "\n")
    assert status == 0 and json.loads(out)["rule"] == "P11", out


def test_explain_json_with_a_huge_burst(mcpgw, tmp_path):
    # A burst no 64-bit integer holds is written as the number it is, not a crash.
    tenant = tmp_path / "acme"
    tenant.mkdir()
    (tenant / "p.json").write_text(json.dumps({"name": "p", "default_action": "allow", "rules": [],
                                               "rate_limits": [{"id": "L1", "rate_per_second": 1, "burst": 1e300}]}))
    status, out = mcpgw("policy", "explain", "--policies", str(tmp_path), "--json", "--tenant", "acme", "--agent", "bot1",
                        "--tool", "read_file")
    assert status == 0, out
    limits = json.loads(out)["rate_limits"]
    assert limits[0]["burst"] == 1e300, limits
