"""Placement: the GPU picked from fallbacks, what a replica asks Ray for, and why no node could hold it."""

import pytest

from lambdaml import DeployError, model
from lambdaml._resources import GpuRequest
from lambdaml.placement import ClusterShape, Placement, check_fits, choose_gpu, place, unschedulable_reason


def _gpu_node(accelerator: str, gpus: float = 1.0) -> dict[str, float]:
    return {"CPU": 8.0, "GPU": gpus, f"accelerator_type:{accelerator}": 1.0}


def test_gpu_fallbacks_pick_the_first_request_a_node_can_hold():
    preferences = (GpuRequest("H100"), GpuRequest("A100"))
    assert choose_gpu(preferences, [_gpu_node("A100")]) == GpuRequest("A100")
    assert choose_gpu(preferences, [_gpu_node("A100"), _gpu_node("H100")]) == GpuRequest("H100")
    assert choose_gpu(preferences, []) == GpuRequest("H100")  # node types unknown: an autoscaler may add one
    assert choose_gpu((), [_gpu_node("A100")]) is None
    # The count matters too: no node has 16 H100s, so the A100 fallback is taken.
    assert choose_gpu((GpuRequest("H100", 16), GpuRequest("A100")), [_gpu_node("H100", 8), _gpu_node("A100")]) == (
        GpuRequest("A100")
    )


def test_unschedulable_reason_compares_needs_with_each_node():
    node = {"CPU": 2.0, "GPU": 1.0, "accelerator_type:A100": 1.0, "memory": 8e9, "node:127.0.0.1": 1.0}
    gpu_replica = Placement(None, {"num_cpus": 1.0, "num_gpus": 1, "accelerator_type": "A100"}).needs
    assert gpu_replica == {"CPU": 1.0, "GPU": 1, "accelerator_type:A100": 0.001}
    assert unschedulable_reason(gpu_replica, [node]) is None
    reason = unschedulable_reason(Placement(None, {"num_cpus": 4.0}).needs, [node])
    assert reason.startswith("a replica needs CPU=4") and "node:" not in reason
    too_much = unschedulable_reason(Placement(None, {"num_cpus": 1.0, "memory": 16 * 2**30}).needs, [node])
    assert "memory=16.0 GiB" in too_much and "memory=7.5 GiB" in too_much  # bytes, said for people


def test_a_model_no_node_or_node_type_can_hold_is_refused_only_where_that_is_known():
    @model(name="huge", cpu=64)
    def huge() -> int:
        return 1

    laptop = ClusterShape([{"CPU": 2.0}])
    with pytest.raises(DeployError, match="embedded local cluster cannot add nodes"):
        check_fits("huge", place(huge.spec, laptop), laptop, embedded=True)
    check_fits("huge", place(huge.spec, laptop), laptop, embedded=False)  # another cluster may grow unseen
    growing = ClusterShape([{"CPU": 2.0}], {"cpu8": {"resources": {"CPU": 8.0}, "max_workers": 2}})
    with pytest.raises(DeployError, match="no node or node type of this cluster has that"):
        check_fits("huge", place(huge.spec, growing), growing, embedded=False)
    big = ClusterShape([{"CPU": 2.0}], {"cpu64": {"resources": {"CPU": 64.0}, "max_workers": 1}})
    check_fits("huge", place(huge.spec, big), big, embedded=False)


def test_the_gpu_is_chosen_from_the_node_types_the_cluster_can_add():
    @model(name="gpu", gpu=["H100", "A100"])
    def gpu() -> int:
        return 1

    shape = ClusterShape([{"CPU": 2.0}], {"a100": {"resources": {"CPU": 8.0, "GPU": 1.0, "accelerator_type:A100": 1.0}}})
    placement = place(gpu.spec, shape)
    assert placement.gpu == GpuRequest("A100") and placement.needs == {"CPU": 1.0, "GPU": 1, "accelerator_type:A100": 0.001}
