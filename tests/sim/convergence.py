"""Liveness and the final state: what "converged" means and what must hold then.

Owns the end of a run. After the network heals and every node is back, each
group must have exactly one leader whose commit covers its log, and every
member (voters and learners) must have applied all of it with identical
state. Then the final checks compare every member's state machine with the
committed log folded through a fresh one, and the acknowledgements with it.
Reads nodes only through ``NodeProcess.view``/``applied_state``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastpaca.raft.messages import ConfState

from .checker import InvariantViolation

if TYPE_CHECKING:
    from .process import NodeProcess
    from .simulator import Simulator

__all__ = ["check_final_state", "convergence_problem", "single_leader"]


def single_leader(sim: Simulator, group: int) -> tuple[str, NodeProcess, ConfState] | None:
    """The group's only leader among live nodes, with its membership."""
    leaders = []
    for node_id in sim.up_nodes():
        process = sim.process(node_id)
        assert process is not None
        view = process.view(group)
        if view is not None and view.is_leader:
            leaders.append((node_id, process, view.conf_state))
    return leaders[0] if len(leaders) == 1 else None


def _members(conf: ConfState) -> list[str]:
    return sorted((*conf.voters, *conf.learners))


def convergence_problem(sim: Simulator) -> str | None:
    """Why the cluster has not converged yet, or None once it has."""
    for group in range(sim.params.group_count):
        found = single_leader(sim, group)
        if found is None:
            return f"group {group} has no single leader"
        leader_id, leader, conf = found
        lead_view = leader.view(group)
        assert lead_view is not None
        if lead_view.commit_index != lead_view.last_index:
            return f"group {group}: leader commit {lead_view.commit_index} < last"
        state = leader.applied_state(group)
        for member in _members(conf):
            process = sim.process(member)
            view = process.view(group) if process is not None else None
            if process is None or view is None:
                return f"group {group}: member {member} does not host it"
            if view.applied_index != lead_view.last_index or view.leader_id != leader_id:
                return (
                    f"group {group}: {member} applied {view.applied_index}/"
                    f"{lead_view.last_index}, leader {view.leader_id}"
                )
            if process.applied_state(group) != state:
                return f"group {group}: {member} state differs from leader {leader_id}"
    return None


def check_final_state(sim: Simulator) -> None:
    """Every member of every group holds exactly the state the committed log
    produces, which contains every acknowledged proposal, and every proposer
    was told the result that log order implies."""
    checker = sim.checker
    for group in range(sim.params.group_count):
        found = single_leader(sim, group)
        assert found is not None
        _, leader, conf = found
        view = leader.view(group)
        assert view is not None
        log = checker.committed_log(group, view.applied_index)
        expected, results = sim.level.reference_state(group, log)
        for member in _members(conf):
            process = sim.process(member)
            assert process is not None
            if process.applied_state(group) != expected:
                raise InvariantViolation(
                    f"state machine safety: group {group} on {member} differs from "
                    f"the committed log through {view.applied_index}"
                )
        lost = checker.acked_beyond(group, view.applied_index)
        if lost:
            raise InvariantViolation(f"durability: group {group} lost acked {lost[:5]}")
        for (g, index), result in sorted(checker.ack_results.items()):
            if g == group and results.get(index) != result:
                raise InvariantViolation(
                    f"results: group {group} index {index} acked with {result!r}, "
                    f"log order gives {results.get(index)!r}"
                )
