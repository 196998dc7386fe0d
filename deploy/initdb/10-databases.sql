-- One database per network node (docker-compose.yml); replicas of a node share its database.
CREATE DATABASE party;
CREATE DATABASE government;
CREATE DATABASE front;
