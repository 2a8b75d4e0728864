-- Virtual servers: the hypervisor and domain that run them.
ALTER TABLE servers ADD COLUMN hypervisor TEXT;
ALTER TABLE servers ADD COLUMN domain TEXT;
