"""How long an unschedulable build pod may wait: scale-ups, no node of the arch, full nodes."""

from __future__ import annotations

from multiarch.runners.kubernetes.scheduling import NO_NODE_NOTICE_S, no_node_matches, patience_s

NO_ARM64 = ("0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. "
            "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.")
FULL = ("0/3 nodes are available: 1 Insufficient memory, 2 node(s) didn't match Pod's node "
        "affinity/selector. preemption: 0/3 nodes are available: 1 No preemption victims found "
        "for incoming pod, 2 Preemption is not helpful for scheduling.")


def pod(nominated=None):
    status = {"phase": "Pending"}
    if nominated:
        status["nominatedNodeName"] = nominated
    return {"metadata": {"name": "p"}, "status": status}


def test_no_node_of_the_architecture_is_recognised():
    assert no_node_matches(NO_ARM64)
    assert no_node_matches("no nodes available to schedule pods")
    assert no_node_matches("0/0 nodes are available: .")
    assert not no_node_matches(FULL)
    assert not no_node_matches("0/2 nodes are available: 2 node(s) had untolerated taint "
                               "{node.kubernetes.io/unreachable: }.")


def test_no_node_and_no_scale_up_fails_after_a_short_notice_not_the_grace():
    assert patience_s(pod(), message=NO_ARM64, grace_s=600, scale_up=False) == NO_NODE_NOTICE_S
    assert patience_s(pod(), message=NO_ARM64, grace_s=0, scale_up=False) == 0


def test_a_scale_up_under_way_is_waited_for():
    assert patience_s(pod(), message=NO_ARM64, grace_s=60, scale_up=True) is None
    assert patience_s(pod(nominated="arm64-new"), message=FULL, grace_s=60,
                      scale_up=False) is None


def test_full_nodes_get_the_configured_grace():
    assert patience_s(pod(), message=FULL, grace_s=60, scale_up=False) == 60
