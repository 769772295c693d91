"""Flask + SQLAlchemy 2 + pg8000, as such an app is written for any WSGI
server: notes in PostgreSQL (DATABASE_URL) created, read and updated
across requests, and a counter in SQLite (SQLITE_PATH) that several
instances write at once."""

import os
import sqlite3

from flask import Flask, abort, request
from sqlalchemy import String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

app = Flask(__name__)


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(200))


_engine = None


def engine():
    # Made on first use: the URL is the instance's granted environment.
    global _engine
    if _engine is None:
        _engine = create_engine(os.environ["DATABASE_URL"])
        Base.metadata.create_all(_engine)
    return _engine


@app.post("/notes")
def create():
    with Session(engine()) as session:
        note = Note(text=request.form["text"])
        session.add(note)
        session.commit()
        return {"id": note.id}, 201


@app.get("/notes/<int:note_id>")
def read(note_id):
    with Session(engine()) as session:
        note = session.get(Note, note_id) or abort(404)
        return {"id": note.id, "text": note.text}


@app.post("/notes/<int:note_id>")
def update(note_id):
    with Session(engine()) as session:
        note = session.get(Note, note_id) or abort(404)
        note.text = request.form["text"]
        session.commit()
        return {"id": note.id, "text": note.text}


@app.get("/notes")
def count():
    with Session(engine()) as session:
        return {"count": session.scalar(select(func.count()).select_from(Note))}


def sqlite():
    timeout = float(os.environ.get("SQLITE_TIMEOUT", "30"))
    connection = sqlite3.connect(os.environ["SQLITE_PATH"], timeout=timeout)
    connection.execute("CREATE TABLE IF NOT EXISTS hits (n INTEGER PRIMARY KEY, at TEXT)")
    return connection


@app.post("/sqlite/hit")
def hit():
    with sqlite() as connection:
        connection.execute("INSERT INTO hits (at) VALUES (datetime('now'))")
    return "ok\n"


@app.post("/sqlite/hold")
def hold():
    # A writer that outlives its request's time limit: it is stopped while
    # it holds the database's write lock.
    import time

    connection = sqlite()
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("INSERT INTO hits (at) VALUES ('held')")
    time.sleep(60)
    connection.commit()
    return "released\n"


@app.get("/sqlite/check")
def check():
    connection = sqlite()
    integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
    hits = connection.execute("SELECT count(*) FROM hits").fetchone()[0]
    return {"integrity": integrity, "hits": hits}


application = app
