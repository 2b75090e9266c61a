"""Each Ray internal lambdaml relies on (lambdaml/cluster/ray_internals.py) is still where it was read.

These fail on a Ray upgrade before any behaviour does; the behaviours themselves are tested
where they show (warm workers, node types, the proxy's JSON errors, leaving the cluster).
"""

import inspect

import pytest

from lambdaml.cluster import ray_internals
from lambdaml.cluster.ray_internals import WRITTEN_FOR, check_version, proxy_error_body
from lambdaml.errors import ClusterError


def test_the_installed_ray_is_the_one_the_internals_were_written_for(monkeypatch):
    import ray

    assert ray.__version__ == WRITTEN_FOR == ray_internals.RAY_VERSION
    check_version()
    monkeypatch.setattr(ray_internals, "RAY_VERSION", "9.9.9")
    with pytest.raises(ClusterError, match=r'needs Ray 2.60.0 .* has Ray 9.9.9.*pip install "ray\[serve\]==2.60.0"'):
        check_version()


def test_the_patched_functions_keep_their_shape():
    from ray.serve._private import http_util, replica, router
    from ray.serve._private.request_router.request_router import RequestRouter

    assert list(inspect.signature(http_util.send_http_response_on_exception).parameters) == ["status", "response_started"]
    assert "status_code" in inspect.signature(http_util.convert_object_to_asgi_messages).parameters
    assert callable(replica.add_port_to_grpc_server) and callable(replica.convert_object_to_asgi_messages)
    assert list(inspect.signature(router.AsyncioRouter.update_deployment_targets).parameters) == [
        "self", "deployment_target_info"]
    assert "_pending_requests_to_fulfill" in inspect.getsource(RequestRouter.__init__)
    assert "self._request_router: " in inspect.getsource(router.AsyncioRouter.__init__)
    assert hasattr(router.SingletonThreadRouter, "_asyncio_loop")
    assert list(inspect.signature(router.RouterMetricsManager.should_send_scaled_to_zero_optimized_push).parameters) == [
        "self", "curr_num_replicas"]
    assert "should_send_scaled_to_zero_optimized_push(" in inspect.getsource(router.RouterMetricsManager.wrap_queued_request)
    assert "self.num_queued_requests" in inspect.getsource(router.RouterMetricsManager._add_autoscaling_metrics_point)
    assert list(inspect.signature(replica.UserCallableWrapper.handle_exception).parameters) == ["self", "exc"]
    from ray.serve._private.haproxy import HAProxyApi

    assert "error_file_path" in inspect.getsource(HAProxyApi._initialize_directories_and_error_files)


def test_the_called_internals_are_there():
    import ray._private.auto_init_hook as auto_init
    import ray._private.ray_constants as constants
    from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc
    from ray.experimental import internal_kv

    assert hasattr(constants, "ENABLE_RAY_CLUSTER") and hasattr(auto_init, "enable_auto_connect")
    assert callable(internal_kv._internal_kv_put) and callable(internal_kv._internal_kv_get)
    from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled
    from ray._private.grpc_utils import init_grpc_channel

    assert callable(get_auth_headers_if_auth_enabled) and "address" in inspect.signature(init_grpc_channel).parameters
    from ray._raylet import AuthenticationTokenLoader, Config

    assert callable(Config.initialize) and callable(AuthenticationTokenLoader.instance().reset_cache)
    assert hasattr(node_manager_pb2_grpc.NodeManagerServiceStub, "__init__")
    request = node_manager_pb2.PrestartWorkersRequest(language=common_pb2.PYTHON, num_workers=1, keep_alive_duration_secs=1)
    assert request.num_workers == 1 and hasattr(node_manager_pb2.GetNodeStatsRequest(), "SerializeToString")


def test_the_proxys_own_errors_become_json_bodies_that_say_what_to_do():
    failed = proxy_error_body(503, "Deployment(name='np', app='np') is unavailable because it failed to deploy.")
    assert failed == {"title": "Model cannot start", "status": 503,
                      "detail": "np cannot start a replica: it failed to deploy. `lambdaml status np` says why."}
    lost = proxy_error_body(500, "ray.exceptions.ActorDiedError: The actor died unexpectedly ... pid=123")
    assert lost["title"] == "Replica lost" and "pid" not in lost["detail"]
    assert proxy_error_body(503, "Request dropped due to backpressure")["detail"] == "Request dropped due to backpressure"
    assert proxy_error_body(408, "")["status"] == 408
