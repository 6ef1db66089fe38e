# fastpaca on Nomad: one job group of three instances, at most one per host,
# each keeping its Raft data on a host volume so a restart or upgrade finds it
# again. Nodes find each other through the static CLUSTER_NODES list
# (var.nodes: one name@host per Nomad client that may run an instance); each
# instance picks its own NODE_NAME by matching the address it was placed on.
#
# Each Nomad client that may run a fastpaca instance declares in its config:
#   client { host_volume "fastpaca-data" { path = "/srv/fastpaca" read_only = false } }
# and runs the `fastpaca` binary from packaging/ (exec driver, no container).

variable "fastpaca_binary" {
  type    = string
  default = "/usr/local/bin/fastpaca"
}

variable "nodes" {
  description = "name@host of every instance; the job pins one instance to each host"
  type        = list(string)
  default     = ["fastpaca1@10.0.0.11", "fastpaca2@10.0.0.12", "fastpaca3@10.0.0.13"]
}

variable "cluster_secret" {
  description = "FASTPACA_CLUSTER_SECRET shared by all nodes (prefer a Nomad variable or Vault)"
  type        = string
}

job "fastpaca" {
  type = "service"

  update {
    # One node at a time: the leaving node hands its leaderships over on
    # SIGTERM, and the next one waits for the cluster to be ready again.
    max_parallel     = 1
    health_check     = "checks"
    min_healthy_time = "10s"
    healthy_deadline = "3m"
  }

  group "fastpaca" {
    count = 3

    # Never two instances of the cluster on one host: a host failure must
    # take down at most one replica of each Raft group.
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    network {
      port "http" {
        static = 4000
      }
    }

    volume "data" {
      type      = "host"
      source    = "fastpaca-data"
      read_only = false
    }

    restart {
      attempts = 10
      interval = "5m"
      delay    = "5s"
      mode     = "delay"
    }

    service {
      name     = "fastpaca"
      port     = "http"
      provider = "nomad"

      check {
        name     = "ready"
        type     = "http"
        path     = "/health/ready"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "fastpaca" {
      driver = "exec"

      config {
        command = var.fastpaca_binary
        args    = ["serve"]
      }

      volume_mount {
        volume      = "data"
        destination = "/var/lib/fastpaca"
      }

      # NODE_NAME is this instance's entry of var.nodes, chosen by the host
      # address Nomad placed it on.
      template {
        destination = "local/node.env"
        env         = true
        data        = <<-EOT
          NODE_NAME={{ range $n := split "," "${join(",", var.nodes)}" }}{{ if eq (index (split "@" $n) 1) (env "NOMAD_IP_http") }}{{ $n }}{{ end }}{{ end }}
        EOT
      }

      env {
        CLUSTER_NODES            = join(",", var.nodes)
        FASTPACA_CLUSTER_SECRET  = var.cluster_secret
        PORT                     = "4000"
        FASTPACA_BIND            = "0.0.0.0"
        FASTPACA_RAFT_DATA_DIR   = "/var/lib/fastpaca/raft"
        FASTPACA_PUBSUB_ADAPTER  = "cluster"
        FASTPACA_ARCHIVER_ENABLED = "false"
        LOG_LEVEL                = "info"
      }

      # DESIGN: SIGTERM drains and exits 0 within 10 s.
      kill_signal  = "SIGTERM"
      kill_timeout = "20s"

      resources {
        cpu    = 1000
        memory = 1024
      }
    }
  }
}
