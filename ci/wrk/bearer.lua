-- GET with the Authorization header of one session (TOKEN), keep-alive.
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
