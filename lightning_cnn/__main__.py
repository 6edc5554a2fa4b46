from lightning_cnn.cli import main

if __name__ == "__main__":
    main()
