package console

import "net/http"

func (c *Console) teamRoutes(m *http.ServeMux) {}
