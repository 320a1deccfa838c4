// Package architecture holds no code: its tests check the shape every service keeps (see
// README, "Layout"), so that a newcomer who has read one service finds the same parts in the
// same places in every other.
package architecture
