CREATE TABLE kit_table (id serial PRIMARY KEY);
