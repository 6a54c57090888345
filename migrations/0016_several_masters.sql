-- Several masters may serve one farm from one database. A slave is online through the master
-- instance that holds its session now: only that instance marks it offline when the session
-- ends (a slave that moved to another master meanwhile stays online), and a slave nobody has
-- heard for a while is offline whoever held it.
ALTER TABLE slaves ADD COLUMN master_instance TEXT;
