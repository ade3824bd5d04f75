# SafeFace's single entry point. `make run` starts the site; `make test` runs every test.
.PHONY: run test css check-deploy clean

run:
	bin/start

test:
	bin/test

css:  ## developer step: recompile static/css/app.css (needs Node and npm)
	scripts/build-css.sh

check-deploy:
	SAFEFACE_ENV=production SECRET_KEY=$$(python3 -c 'import secrets; print(secrets.token_urlsafe(64))') \
	ALLOWED_HOSTS=safeface.example DATABASE_URL=sqlite:////tmp/safeface-check.sqlite3 \
	.venv/bin/python manage.py check --deploy --fail-level WARNING

clean:
	rm -rf .venv staticfiles .pytest_cache
