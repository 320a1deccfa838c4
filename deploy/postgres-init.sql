-- Runs once, when the postgres container initialises an empty data volume
-- (/docker-entrypoint-initdb.d). One database per service (design.md section 2), all owned by
-- the POSTGRES_USER that runs this script. Each service creates its own tables on start.
CREATE DATABASE auth;
CREATE DATABASE campaigns;
CREATE DATABASE dsr;
