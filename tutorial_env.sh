# The tutorial's settings: `source tutorial_env.sh` in the shell of the tutorial's commands, before local_cluster.py.
# The mode: cpu (the small model on the CPU), one-gpu (the small model on one GPU) or gpu (QwQ-32B on 8 GPUs). It
# picks the application that `serve run` deploys, the config file of `serve deploy` and the model the clients ask for.
export TUTORIAL_DEVICE="${TUTORIAL_DEVICE:-cpu}"
case "$TUTORIAL_DEVICE" in
  cpu) export SERVE_APP=serve_tiny_reasoner:app SERVE_CONFIG=serve_tiny_reasoner.yaml MODEL_ID=tiny-reasoner ;;
  one-gpu) export SERVE_APP=serve_tiny_reasoner:app SERVE_CONFIG=serve_tiny_reasoner_gpu.yaml MODEL_ID=tiny-reasoner ;;
  gpu) export SERVE_APP=serve_qwq_32b:app SERVE_CONFIG=serve_qwq_32b.yaml MODEL_ID=my-qwq-32B ;;
  *) echo "TUTORIAL_DEVICE is '$TUTORIAL_DEVICE'; it must be cpu, one-gpu or gpu" >&2 && return 1 ;;
esac

# Token authentication for the cluster's control plane; `local_cluster.py start` creates the token.
export RAY_AUTH_MODE=token
# A one-machine cluster: Ray's own servers listen on 127.0.0.1 only. This is Ray's switch for single-machine
# clusters, named for Windows and macOS, where it is the default; leave it out for a cluster of several nodes.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# Direct streaming: the vLLM server replica streams to the client itself, behind HAProxy (Appendix B measures it).
export RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING=1 RAY_SERVE_ENABLE_HA_PROXY=1
# HAProxy needs about 2.5 file descriptors per connection it may hold (4,096: Ray 2.60's default), or fails to start.
export RAY_SERVE_HAPROXY_MAXCONN=4096
# After a reload, HAProxy's old process may serve 1,800 s, not Ray's 120, so its long chains finish (Appendix C).
export RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S=1800
# A stopping replica waits 10 s, not Ray's 30, for HAProxy to stop sending to it (here it took under 3 s: Appendix C),
# so a redeploy or shutdown is 20 s quicker. Ray's 30 s is for a load balancer outside the cluster, such as a cloud's.
export RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S=10
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt 10340 ]; then
  echo "HAProxy needs about 10,340 file descriptors; ulimit -Hn allows $(ulimit -Hn): lower RAY_SERVE_HAPROXY_MAXCONN" >&2
fi
