"""Off-appliance tools: the server agent, replication adapters, technicians tools."""
