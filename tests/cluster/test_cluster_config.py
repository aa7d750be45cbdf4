"""``cluster`` in gateway.yaml: off by default; with a Redis URL it needs the address the
other instances reach this one at, and a TTL the heartbeat can keep alive."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config
from gateway.http.keys import CLUSTER
from tests.conftest import base_config, running_gateway


def test_cluster_is_off_by_default():
    assert parse_config(base_config(), {}).cluster.redis_url is None


def test_a_redis_url_needs_an_instance_url_and_a_ttl_above_two_heartbeats():
    data = base_config()
    data["cluster"] = {"redis_url": "redis://127.0.0.1:6379/0", "heartbeat_s": 2, "ttl_s": 3}
    with pytest.raises(ConfigError) as error:
        parse_config(data, {})
    text = str(error.value)
    assert "cluster.instance_url: exactly one of instance_url and instance_url_env" in text
    assert "cluster.ttl_s: 3.0 must be at least twice heartbeat_s" in text
    data["cluster"] = {"redis_url": "http://example.com", "instance_url": "ftp://x"}
    with pytest.raises(ConfigError) as error:
        parse_config(data, {})
    text = str(error.value)
    assert "cluster.redis_url" in text and "cluster.instance_url" in text


def test_the_redis_password_comes_from_the_environment_and_is_never_shown():
    data = base_config()
    data["cluster"] = {"redis_url": "redis://:hunter2@10.0.0.9:6379/0",
                       "instance_url": "http://10.0.0.5:8080"}
    with pytest.raises(ConfigError) as error:
        parse_config(data, {})
    assert "holds credentials" in str(error.value) and "hunter2" not in str(error.value)
    for url in ("redis://10.0.0.9:6379/0", "rediss://redis.internal", "redis://[::1]:6379",
                "unix:///run/redis.sock"):
        data["cluster"] = {"redis_url": url, "redis_password_env": "REDIS_PASSWORD",
                           "instance_url": "http://10.0.0.5:8080"}
        config = parse_config(data, {"REDIS_PASSWORD": "hunter2"}).cluster
        assert config.redis_password == "hunter2" and "hunter2" not in repr(config)


async def test_without_redis_url_no_directory_and_calls_list_as_before():
    async with running_gateway(base_config()) as gw:
        assert CLUSTER not in gw.app
        status, body = await gw.get_json("/v1/calls")
        assert status == 200 and body == {"calls": []}
        status, body = await gw.get_json("/v1/cluster")
        assert status == 404 and "cluster is off" in body["error"]["message"]


def test_the_instance_url_can_come_from_an_environment_variable():
    """Kubernetes: the downward API puts the pod's IP in POD_IP, and the Deployment builds
    TTS_GATEWAY_INSTANCE_URL=http://$(POD_IP):8080 from it (deploy/k8s/deployment.yaml)."""
    data = base_config()
    data["cluster"] = {"redis_url": "redis://10.0.0.9:6379/0",
                       "instance_url_env": "TTS_GATEWAY_INSTANCE_URL"}
    environ = {"TTS_GATEWAY_INSTANCE_URL": "http://10.1.2.3:8080"}
    assert parse_config(data, environ).cluster.instance_url == "http://10.1.2.3:8080"
    for environ, message in (({}, "TTS_GATEWAY_INSTANCE_URL is not set"),
                             ({"TTS_GATEWAY_INSTANCE_URL": "http://:8080/x y" + "z" * 500},
                              "TTS_GATEWAY_INSTANCE_URL holds 'http://:8080/x yzz")):
        with pytest.raises(ConfigError) as error:
            parse_config(data, environ)
        assert f"cluster.instance_url_env: environment variable {message}" in str(error.value)
        assert "z" * 100 not in str(error.value)  # an outside value is shown cut short
    data["cluster"]["instance_url"] = "http://10.0.0.5:8080"  # both: which one would win?
    with pytest.raises(ConfigError, match="exactly one of instance_url and instance_url_env"):
        parse_config(data, {"TTS_GATEWAY_INSTANCE_URL": "http://10.1.2.3:8080"})
    data["cluster"] = {"redis_url": "redis://10.0.0.9:6379/0", "instance_url_env": "not a name"}
    with pytest.raises(ConfigError) as error:
        parse_config(data, {})
    assert "cluster.instance_url_env: 'not a name' must be an environment variable's name" in str(
        error.value)
    # without redis_url the setting is read but nothing needs it
    data["cluster"] = {"instance_url_env": "TTS_GATEWAY_INSTANCE_URL"}
    assert parse_config(data, {}).cluster.instance_url is None
