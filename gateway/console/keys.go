package console

import "net/http"

func (c *Console) keyRoutes(m *http.ServeMux) {}
