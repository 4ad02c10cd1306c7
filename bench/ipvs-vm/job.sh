#!/bin/sh
# Inside the VM: section 2 of the bench (xlb and kernel IPVS in the same topology),
# results to /root/results.json (the host reads them from the shared root).
modprobe veth
ulimit -n 65536
rm -f /root/results.json
exec /usr/local/bin/xlb-bench --sections e2e ${QUICK:+--quick} --json /root/results.json
