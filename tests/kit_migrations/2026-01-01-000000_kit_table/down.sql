DROP TABLE kit_table;
