-- Where a server's record comes from: the configuration (`config`) or an import from a
-- hypervisor (`import:<hypervisor>`). Only servers from the configuration are retired when
-- they leave it.
ALTER TABLE servers ADD COLUMN origin TEXT NOT NULL DEFAULT 'config';
