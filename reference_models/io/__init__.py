"""Reading and writing frames: video files and folders of images (:mod:`.video`), and output written under a
partial name that is moved into place only when complete (:mod:`.partial_output`)."""
