-- Found by cordon-bench: the inventory sync read address_history by server without an index
-- (quadratic in the number of servers), and looking a server up by address scanned every NIC.
CREATE INDEX address_history_by_server ON address_history(server_id, kind, valid_to_us);
CREATE INDEX nics_by_operational_ip ON nics(operational_ip);
CREATE INDEX nics_by_current_ip ON nics(current_ip);
