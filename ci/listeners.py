"""What the tutorial's cluster listens on, and what a client without the cluster token gets there.

    python ci/listeners.py [--auth token|disabled] [--ray-defaults]   # start a cluster, deploy, print, stop

Every socket is read from the socket table of the cluster's own processes; every probe goes to loopback only (a
socket bound to all interfaces answers there as it would elsewhere). tests/test_cluster.py checks the notebook's
table with the same functions.
"""

import argparse
import json
import socket
import sys
from pathlib import Path

import grpc
import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import local_cluster  # noqa: E402

LOOPBACK = ("127.", "::1", "::ffff:127.")


def role(process):
    """What a listening process is, in the words of the notebook's table."""
    cmdline = " ".join(process.cmdline())
    for needle, name in [
        ("gcs_server", "Ray GCS"),
        ("raylet", "raylet"),
        ("ray.util.client.server", "Ray client server"),
        ("dashboard/dashboard.py", "Ray dashboard"),
        ("autoscaler", "Ray autoscaler monitor"),
        ("DashboardAgent", "Ray dashboard agent"),
        ("RuntimeEnvAgent", "Ray runtime env agent"),
        ("ServeHead", "Ray dashboard (Serve module)"),
        ("haproxy", "HAProxy"),
        ("ServeReplica", "Serve replica"),
        ("ServeController", "Serve controller"),
        ("ProxyActor", "Serve proxy actor"),
        ("HAProxyManager", "Serve HAProxy manager"),
        ("VLLM::", "vLLM engine"),
        ("ray::", "Ray worker"),
    ]:
        if needle in cmdline:
            return name
    return cmdline[:60]


def listeners(session_id):
    """(role, address, port, pid) of every listening TCP socket of the cluster's processes."""
    found = []
    for process in local_cluster.session_processes(session_id):
        try:
            for connection in process.net_connections(kind="tcp"):
                if connection.status == psutil.CONN_LISTEN:
                    found.append((role(process), connection.laddr.ip, connection.laddr.port, process.pid))
        except psutil.NoSuchProcess:
            pass
    return sorted(found, key=lambda item: (item[0], item[2]))


def still_listening(pid, port):
    """Whether process `pid` listens on `port` now: replicas come and go (a redeploy, a replaced engine)."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections)


def exposed(found):
    """The listeners another machine could reach: those not bound to a loopback address."""
    return [item for item in found if not item[1].startswith(LOOPBACK)]


# A real method of each kind of gRPC server, to call without the token: a method that does not exist says nothing,
# since Ray checks the token only for methods a server has.
CORE_WORKER = "/ray.rpc.CoreWorkerService/NumPendingTasks"
GRPC_METHODS = {
    "Ray GCS": ["/ray.rpc.NodeInfoGcsService/GetAllNodeInfo"],
    "raylet": ["/ray.rpc.NodeManagerService/GetNodeStats"],
    "Ray client server": ["/ray.rpc.RayletDriver/ClusterInfo"],
    "Serve replica": ["/ray.serve.ASGIService/HandleRequest", CORE_WORKER],  # its own server, or Ray's worker one
}


def probe(port, role):
    """What a client without the token gets on `port`, asked over loopback: an HTTP status, or the gRPC status of
    a real method called with an empty request (UNAUTHENTICATED: refused; anything else: the server took the call)."""
    try:
        for path in ("/stats", "/metrics", "/"):  # HAProxy's pages first
            reply = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=3)
            if reply.status_code == 200 or path == "/":
                return f"HTTP {reply.status_code} on {path}"
    except httpx.HTTPError:
        pass  # not HTTP/1: try gRPC
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        status = "no answer"
        for method in GRPC_METHODS.get(role, [CORE_WORKER]):
            try:
                channel.unary_unary(method)(b"", timeout=5)
                return f"gRPC OK: {method}"
            except grpc.RpcError as error:
                status = f"gRPC {error.code().name}: {method}"
                if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                    break
        return status


def main():
    from harness.config import CPU_CONFIG
    from harness.servers import RayCluster

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--auth", choices=["token", "disabled"], default="token")
    parser.add_argument("--ray-defaults", action="store_true", help="without the tutorial's loopback switch")
    args = parser.parse_args()
    env = {"RAY_AUTH_MODE": args.auth, **({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"} if args.ray_defaults else {})}
    cluster = RayCluster(env)
    try:
        cluster.start()
        cluster.deploy(CPU_CONFIG)
        found = listeners(local_cluster.started_session())
        rows = [{"role": r, "address": a, "port": p, "without token": probe(p, r)} for r, a, p, _ in exposed(found)]
        print(
            json.dumps(
                {"auth": args.auth, "ray_defaults": args.ray_defaults, "listening": len(found), "exposed": rows},
                indent=1,
            )
        )
    finally:
        cluster.stop()


if __name__ == "__main__":
    socket.setdefaulttimeout(5)
    main()
