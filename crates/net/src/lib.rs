//! Host networking: bridges, TAP devices, veth pairs, network namespaces and Boxcutter's nftables rule set.
