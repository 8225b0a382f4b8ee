from evolstm.cli import main

raise SystemExit(main())
