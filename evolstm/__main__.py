from evolstm.run.cli import main

raise SystemExit(main())
