"""Election, replication and commit in a small in-process cluster."""

from __future__ import annotations

from pnyx.core.raft.testing import LocalCluster
from pnyx.core.raft.types import NONE, EntryType, Role


def test_three_node_cluster_elects_exactly_one_leader() -> None:
    cluster = LocalCluster(voters=(1, 2, 3))
    cluster.tick_until(lambda: cluster.leader() != NONE)
    leader = cluster.leader()
    term = cluster[leader].term
    roles = [cluster[n].role for n in (1, 2, 3)]
    assert roles.count(Role.LEADER) == 1
    assert all(cluster[n].leader_id == leader and cluster[n].term == term for n in (1, 2, 3))


def test_proposals_replicate_commit_and_apply_on_every_node() -> None:
    cluster = LocalCluster(voters=(1, 2, 3))
    cluster.elect(1)
    for i in range(20):
        cluster[1].propose(b"v%d" % i)
    cluster.stabilize()
    cluster.spread_commit()
    expected = [b"v%d" % i for i in range(20)]
    for node_id in (1, 2, 3):
        assert cluster.members[node_id].data == expected
        assert cluster[node_id].commit_index == cluster[1].last_index


def test_single_node_cluster_commits() -> None:
    cluster = LocalCluster(voters=(1,))
    cluster.elect(1)
    cluster.propose(1, b"solo")
    assert cluster.members[1].data == [b"solo"]
    assert cluster[1].commit_index == cluster[1].last_index


def test_new_leader_appends_an_empty_noop_of_its_term() -> None:
    cluster = LocalCluster(voters=(1, 2, 3))
    cluster.elect(2)
    last = cluster[2].entries(cluster[2].last_index, cluster[2].last_index + 1)[0]
    assert last.type is EntryType.NORMAL and last.data == b"" and last.term == cluster[2].term
